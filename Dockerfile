# The one image both components run: `sluice operator` and `sluice proxy`.
#   docker build -t sluice:0.1.0 .
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
# The chart runs it as 65532 with a read-only root filesystem (and /tmp as an emptyDir).
RUN groupadd --gid 65532 sluice && useradd --uid 65532 --gid 65532 --no-create-home sluice
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER 65532:65532
ENV PYTHONUNBUFFERED=1
EXPOSE 8080 9090
ENTRYPOINT ["sluice"]
CMD ["--help"]
