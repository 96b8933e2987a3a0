// The multi-stage Dockerfile and context the builds tests share (builds.test.ts checks what
// each instruction did in the image; builds-buildah.test.ts compares the image with
// buildah's): COPY with a glob and --chown, .dockerignore, COPY --from a stage,
// ENV/ARG/WORKDIR/USER/ENTRYPOINT/CMD/EXPOSE/LABEL, and a RUN that deletes a base file.
import fs from 'node:fs/promises';
import path from 'node:path';

/** Build it with `--build-arg BASE=<a busybox image>`. */
export const MULTISTAGE_DOCKERFILE = `# syntax=docker/dockerfile:1
ARG BASE
FROM \${BASE} AS builder
WORKDIR /src
COPY --chown=1000:1000 src/a*.txt ./
RUN echo "built from $(cat /src/a.txt)" > /src/out.txt && stat -c %u /src/a.txt >> /src/out.txt

FROM \${BASE}
ARG GREETING=hello
ENV APP_HOME=/app \\
    APP_GREETING=\${GREETING}
WORKDIR \${APP_HOME}
COPY --from=builder /src/out.txt ./
COPY --chown=1000:1000 src/ ./src/
RUN rm /bin/vi && echo "arg=$GREETING" > /app/arg.txt && mkdir -p /app/data && chown 1000 /app/data
USER 1000:1000
EXPOSE 8080
LABEL org.example.test="yes"
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["cat out.txt arg.txt; echo env=$APP_GREETING; id -u; pwd; ls src; stat -c %u src/b.txt; test -e /bin/vi && echo vi-here || echo vi-gone; touch data/ok && echo data-writable"]
`;

/** The context: src/{a,b,secret}.txt, debug.log and a .dockerignore leaving out secret and logs. */
export async function writeMultistageContext(ctx: string): Promise<void> {
  await fs.mkdir(path.join(ctx, 'src'), { recursive: true });
  await fs.writeFile(path.join(ctx, 'src', 'a.txt'), 'alpha');
  await fs.writeFile(path.join(ctx, 'src', 'b.txt'), 'beta');
  await fs.writeFile(path.join(ctx, 'src', 'secret.txt'), 'never sent');
  await fs.writeFile(path.join(ctx, 'debug.log'), 'ignored');
  await fs.writeFile(path.join(ctx, '.dockerignore'), '# comment\nsrc/secret.txt\n*.log\n');
}
