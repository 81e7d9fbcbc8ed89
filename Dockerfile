FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOST=0.0.0.0 \
    PORT=18080

WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

RUN useradd --create-home --uid 10001 gateway \
    && mkdir -p /app/data /app/logs \
    && chown -R gateway:gateway /app
COPY --chown=gateway:gateway gateway/ gateway/
COPY --chown=gateway:gateway proxy_server.py manage_keys.py local_models.py ./
COPY docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh

# The entrypoint starts as root only to hand ./data and ./logs (bind mounts Docker may have
# created as root) to the gateway user, then runs the gateway as that user.
ENTRYPOINT ["docker-entrypoint.sh"]
EXPOSE 18080
HEALTHCHECK --interval=30s --timeout=3s --start-period=5s --retries=3 \
    CMD python -c "import os,urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '18080'), timeout=2)" || exit 1

CMD ["python", "proxy_server.py"]
