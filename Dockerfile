# syntax=docker/dockerfile:1
# Multi-stage: build a wheel with its dependencies, run as a non-root user.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY worker ./worker
COPY tasks ./tasks
COPY simulator ./simulator
COPY producer/src ./producer/src
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[simulator,tracing,errors]"

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 callpass
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels "callpass-worker[simulator,tracing,errors]" \
    && rm -rf /wheels
USER callpass
WORKDIR /home/callpass
ENV PYTHONUNBUFFERED=1
CMD ["celery", "-A", "worker.celery_app", "worker", "--loglevel", "INFO"]
