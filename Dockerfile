# streamproxy: a slim image that runs as an unprivileged user.
#   docker build -t streamproxy .
#   docker run -p 8080:8080 -v media:/var/lib/streamproxy/data streamproxy
FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY streamproxy ./streamproxy
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[speed]"

FROM python:3.12-slim
RUN useradd --system --uid 10001 --create-home --home-dir /var/lib/streamproxy streamproxy \
    && mkdir -p /var/lib/streamproxy/data && chown streamproxy /var/lib/streamproxy/data
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index /wheels/*.whl && rm -rf /wheels
USER streamproxy
ENV STREAMPROXY_HOST=0.0.0.0 \
    STREAMPROXY_PORT=8080 \
    STREAMPROXY_STORAGE=/var/lib/streamproxy/data \
    PYTHONUNBUFFERED=1
VOLUME ["/var/lib/streamproxy/data"]
EXPOSE 8080
# Liveness on /healthz, following the port and base path the container is given.
HEALTHCHECK --interval=30s --timeout=3s --start-period=5s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('STREAMPROXY_PORT', '8080') + os.environ.get('STREAMPROXY_BASE_PATH', '') + '/healthz', timeout=2)"]
# SIGTERM lets transfers in flight finish for --shutdown-timeout seconds.
STOPSIGNAL SIGTERM
ENTRYPOINT ["streamproxy", "serve"]
