# The wasp image: a release build, on Debian with the iptables, nftables and conntrack tools.
# Build: docker build -t wasp .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p wasp

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables nftables conntrack iproute2 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/wasp /usr/local/bin/wasp
ENTRYPOINT ["/usr/local/bin/wasp"]
CMD ["run", "--config=/etc/wasp/wasp.yaml"]
