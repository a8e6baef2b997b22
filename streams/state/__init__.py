"""Local table state: bulk restore of changelog-backed tables."""
