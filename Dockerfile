# Glassbox: glassboxd (the gRPC server) and glassbox (the CLI) in a slim runtime image.
#
#   docker build -t glassbox .                      # NVIDIA CUDA 13 bases (real GPU nodes)
#   podman build --format docker --build-arg BASE=localhost/glassbox-base:bookworm \
#                --build-arg BUILD_BASE=localhost/glassbox-base:bookworm -t glassbox:ci .
#                                                   # plain Debian bookworm, CPU backend (CI)
#
# The build stage compiles only the two binaries (tests off; the CUDA backend when nvcc is
# present, i.e. on the CUDA devel base). The runtime stage installs exactly the Debian/Ubuntu
# packages that own the shared libraries the binaries load: the list is computed with ldd +
# dpkg -S in the build stage (deploy/runtime-packages.sh), so the same Dockerfile works on
# Debian bookworm and on Ubuntu 24.04 (whose packages carry the t64 suffix).
# See docs/deploy.md.

ARG BUILD_BASE=nvidia/cuda:13.0.0-devel-ubuntu24.04
ARG BASE=nvidia/cuda:13.0.0-runtime-ubuntu24.04

FROM ${BUILD_BASE} AS build
ARG JOBS=2
ARG GLASSBOX_CUDA=AUTO
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      g++ cmake ninja-build pkg-config ccache \
      libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc \
      libabsl-dev libdnnl-dev nlohmann-json3-dev libpcre2-dev libonig-dev libutf8proc-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Only what the two targets need, so edits to docs, tests or deploy/ keep the compile cached.
COPY CMakeLists.txt ./
COPY base base
COPY proto proto
COPY kernels kernels
COPY server server
COPY client/cpp client/cpp
# ccache in a cache mount (kept by the builder between builds, never in an image): a rebuild
# after a source change recompiles only what changed. The object files are not kept in the
# layer, only the two binaries. Needs BuildKit (Docker >= 23 default) or
# podman/buildah.
ENV CCACHE_DIR=/root/.cache/ccache CCACHE_MAXSIZE=2G
RUN --mount=type=cache,id=glassbox-ccache,target=/root/.cache/ccache \
    cmake -S . -B /tmp/build -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DGLASSBOX_BUILD_TESTS=OFF -DGLASSBOX_CUDA=${GLASSBOX_CUDA} \
      -DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache \
 && ninja -C /tmp/build -j "${JOBS}" glassboxd glassbox \
 && mkdir -p /out/bin \
 && cp /tmp/build/server/service/glassboxd /tmp/build/client/cpp/glassbox /out/bin/ \
 && strip --strip-unneeded /out/bin/glassboxd /out/bin/glassbox \
 && rm -rf /tmp/build \
 && { ccache --show-stats | grep -iE "hits|misses" || true; }
COPY deploy/runtime-packages.sh /usr/local/bin/
RUN sh /usr/local/bin/runtime-packages.sh /out/bin/glassboxd /out/bin/glassbox > /out/runtime-packages.txt \
 && cat /out/runtime-packages.txt

FROM ${BASE} AS runtime
COPY --from=build /out/runtime-packages.txt /usr/share/glassbox/runtime-packages.txt
RUN missing=$(for p in $(cat /usr/share/glassbox/runtime-packages.txt); do \
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || echo "$p"; done) \
 && if [ -n "$missing" ]; then \
      apt-get update -qq \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing \
      && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb; \
    fi \
 && useradd --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin glassbox \
 && mkdir -p /models /saes /etc/glassbox
COPY --from=build /out/bin/glassboxd /out/bin/glassbox /usr/local/bin/
# A default config naming /models/gpt2; mount your own over /etc/glassbox/config.json.
COPY deploy/config.json /etc/glassbox/config.json
# Models and SAEs are mounted read-only from the host or a volume; nothing is baked in.
VOLUME ["/models", "/saes"]
USER glassbox:glassbox
EXPOSE 50051
# glassboxd stops accepting work on SIGTERM, drains in-flight requests (--drain_seconds,
# default 30) and exits 0: give it at least that long (docker stop -t 40, k8s grace 45 s).
STOPSIGNAL SIGTERM
# No grpc_health_probe in Debian or Ubuntu: the bundled CLI asks the server for its models,
# which exits 0 only when the server answers (Kubernetes uses its native gRPC health probe).
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 \
  CMD ["glassbox", "--server", "127.0.0.1:50051", "--timeout", "5s", "models"]
ENTRYPOINT ["glassboxd", "--config", "/etc/glassbox/config.json"]
CMD []
