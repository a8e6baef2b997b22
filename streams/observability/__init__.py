"""Operability: lane status board, metrics, JSON logging, consumer lag and readiness."""
