FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY longtask ./longtask
COPY workflows ./workflows
COPY activities ./activities
COPY worker.py starter.py ./
RUN pip install --no-cache-dir .
# SIGTERM lets in-flight steps finish (graceful shutdown) before the container stops.
STOPSIGNAL SIGTERM
CMD ["python", "worker.py"]
