# The broker as a container. Build: docker build -t jit-broker .   (or: docker compose build)
#
# The image runs with NODE_ENV=production, where the broker refuses development issuers: the
# shipped config/broker.yaml (a development configuration) does not start unless
# BROKER_ALLOW_DEV_ISSUERS=true says so (docker-compose.yml does, for local use). In production,
# mount your own configuration and point BROKER_CONFIG at it (README, "Containers").
FROM node:20-bookworm-slim AS build
# better-sqlite3 compiles its native addon when no prebuilt binary can be fetched.
RUN apt-get update && apt-get install -y --no-install-recommends python3 make g++ \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json tsconfig.json tsconfig.build.json ./
COPY src ./src
# npm ci runs `prepare`, which compiles src/ to dist/; then the dev tools go.
RUN npm ci && npm prune --omit=dev

FROM node:20-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json ./
COPY migrations ./migrations
COPY config ./config
# `jit` on the PATH (backup, restore, audit verify, dev-token), and a data directory the
# unprivileged user owns: a named volume mounted there starts with this owner.
RUN chmod +x dist/cli/main.js && ln -s /app/dist/cli/main.js /usr/local/bin/jit \
    && mkdir -p /app/data && chown node:node /app/data
USER node
EXPOSE 8080
VOLUME ["/app/data"]
# Asks /readyz where the configuration in use says the broker listens (a mounted file's port too).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s \
  CMD ["node", "dist/main.js", "--ready-check"]
# SIGHUP reloads the configuration (docker kill -s HUP <container>); SIGTERM stops cleanly.
CMD ["node", "--max-semi-space-size=8", "--heap-growing-percent=100", "dist/main.js"]
