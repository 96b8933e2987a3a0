import type { ImageStreamEvent } from '../client/index.js';
import type { Image, LayerProgress } from '../client/index.js';
import { humanBytes, shortDigest } from './output.js';

/**
 * Renders an image's pull as one progress bar per layer on a TTY (redrawn in
 * place), or as one line per status change otherwise. Writes to stderr so
 * stdout stays clean for `--json`.
 */
export class PullProgress {
  private readonly out: NodeJS.WriteStream;
  private readonly tty: boolean;
  private readonly layers = new Map<string, LayerProgress>();
  private drawn = 0;
  private status = '';

  constructor(out: NodeJS.WriteStream = process.stderr) {
    this.out = out;
    this.tty = out.isTTY === true;
  }

  update(e: ImageStreamEvent): void {
    if (e.type === 'progress') {
      this.layers.set(e.layer.digest, e.layer);
      if (this.tty) this.redraw();
      return;
    }
    if (e.type === 'status') this.onStatus(e.image);
  }

  private onStatus(image: Image): void {
    const label =
      image.status === 'pending' && image.queue_position
        ? `pending (queue position ${image.queue_position})`
        : image.status;
    if (label === this.status) return;
    this.status = label;
    if (this.tty) this.redraw();
    else this.out.write(`${image.name}: ${label}\n`);
  }

  private bar(p: LayerProgress): string {
    const width = 30;
    const frac = p.total ? Math.min(1, p.current / p.total) : 0;
    const done = Math.round(frac * width);
    return `${shortDigest(p.digest)}  [${'='.repeat(done)}${done < width ? '>' : ''}${' '.repeat(Math.max(0, width - done - 1))}] ${humanBytes(p.current)} / ${humanBytes(p.total)}`;
  }

  private redraw(): void {
    const lines = [...[...this.layers.values()].map((p) => this.bar(p)), `status: ${this.status}`];
    if (this.drawn > 0) this.out.write(`\x1b[${this.drawn}A`);
    for (const l of lines) this.out.write(`\x1b[2K${l}\n`);
    this.drawn = lines.length;
  }
}
