# The streamsql runner. Build: docker build -t streamsql .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked && cp target/release/streamsql /usr/local/bin/streamsql

FROM debian:bookworm-slim
COPY --from=build /usr/local/bin/streamsql /usr/local/bin/streamsql
WORKDIR /app
COPY pipelines.yaml ./
COPY queries ./queries
COPY datasets ./datasets
ENTRYPOINT ["streamsql"]
CMD ["run", "task_failures", "--quiet"]
