# Image of the worker for docker-compose.yml (not built on the project's own machines).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY streams streams
COPY agents agents
COPY tables tables
COPY schemas schemas
COPY migrations migrations
COPY simulator simulator
RUN pip install --no-cache-dir .
ENV TORGHUT_DATA_DIR=/data TORGHUT_LOG_FORMAT=json
VOLUME /data
EXPOSE 6066
CMD ["faust", "-A", "streams.app", "worker", "-l", "info"]
