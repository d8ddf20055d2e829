# The worker image; the compose file also runs the local LLM server (llmock, a dependency) from it.
# docker-compose.yml passes PYTHON_VERSION from .env; the default here is the same pin.
ARG PYTHON_VERSION=3.11.14-slim-bookworm
FROM python:${PYTHON_VERSION}
WORKDIR /app
# EXTRAS="[local]" adds the local LLM server (compose's local-llm profile); the worker image
# carries none of the local stack.
ARG EXTRAS=""
COPY pyproject.toml README.md constraints.txt ./
COPY longtask ./longtask
COPY workflows ./workflows
COPY activities ./activities
COPY worker.py starter.py ./
RUN pip install --no-cache-dir -c constraints.txt ".${EXTRAS}"
# Not root. /data is where compose mounts the payload store and reports shared by every worker
# and client; a fresh named volume takes this folder's owner.
RUN useradd --create-home --uid 10001 ltm \
    && mkdir -p /data/payloads /data/reports \
    && chown -R ltm:ltm /data
USER ltm
# SIGTERM lets in-flight steps finish (graceful shutdown) before the container stops.
STOPSIGNAL SIGTERM
CMD ["python", "worker.py"]
