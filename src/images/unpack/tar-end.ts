// Where a layer's tar stream may end. Go's archive/tar (containerd, Docker,
// umoci) writes the end-of-archive blocks and the last entry's padding only on
// Close, so layers from writers that never close end right after the last
// entry's data. They are accepted; a stream cut inside a header or inside an
// entry's data is not. See README, "A tar stream may end after any complete entry".
import type { Header } from 'tar-stream';
import { VesselError, errorMessage } from '../../core/errors.js';

/** The tar block size: headers and padded entry data are multiples of it. */
export const TAR_BLOCK = 512;

/** One entry's place in the uncompressed stream. */
interface EntrySpan {
  readonly name: string;
  /** First byte after the entry's header block(s): where its data starts. */
  readonly dataStart: number;
  /** First byte after its data. */
  readonly dataEnd: number;
  /** First byte after its data's padding: where the next header starts. */
  readonly paddedEnd: number;
}

/** The bytes of data tar-stream reads after this header (it reads none for directories). */
function dataSize(header: Header): number {
  return header.type === 'directory' ? 0 : (header.size ?? 0);
}

/** The offset in the uncompressed stream where tar-stream found the entry's data. */
export function dataOffset(header: Header): number {
  const byteOffset = (header as Header & { byteOffset?: unknown }).byteOffset;
  return typeof byteOffset === 'number' ? byteOffset : 0;
}

function truncated(reason: string, entry?: string): VesselError {
  return new VesselError(
    'unsafe_layer',
    `tar stream is truncated: ${reason}`,
    entry === undefined ? {} : { details: { entry } },
  );
}

/**
 * Tracks the tar framing of one layer from the entries tar-stream reports and
 * decides what the end of the input means. The parser itself needs the input
 * to end on a block boundary, so when it does not, {@link inputEnded} returns
 * zero bytes to complete the block; those are legitimate only when they fall
 * inside the padding of the last entry, which {@link entry} and
 * {@link parserFinished} check. The filler is never hashed (it is not part of
 * the layer's diff_id) and never reaches a file.
 */
export class TarEnd {
  private last: EntrySpan | undefined;
  /** Bytes of real input, once it ended. */
  private total: number | undefined;
  private filler = 0;

  /**
   * Record an entry the parser reported, before it is applied. Throws when the
   * input already ended inside this entry's header or data.
   */
  entry(header: Header): void {
    const dataStart = dataOffset(header);
    const size = dataSize(header);
    const span: EntrySpan = {
      name: header.name,
      dataStart,
      dataEnd: dataStart + size,
      paddedEnd: dataStart + Math.ceil(size / TAR_BLOCK) * TAR_BLOCK,
    };
    this.last = span;
    if (this.total === undefined) return;
    if (span.dataStart > this.total) {
      throw truncated(`it ends inside the header of entry ${JSON.stringify(span.name)}`, span.name);
    }
    this.checkData(span, this.total);
  }

  /**
   * The input ended after `total` bytes. Returns the zero bytes to feed the
   * parser so that it sees whole blocks; throws when the input ended inside the
   * data of the last entry reported so far.
   */
  inputEnded(total: number): Buffer {
    this.total = total;
    if (this.last) this.checkData(this.last, total);
    const rest = total % TAR_BLOCK;
    this.filler = rest === 0 ? 0 : TAR_BLOCK - rest;
    return Buffer.alloc(this.filler);
  }

  /**
   * The parser accepted the stream. Throws unless any filler went into the last
   * entry's padding: otherwise the input ended inside a header (an entry's,
   * an extended header's or an end-of-archive block).
   */
  parserFinished(): void {
    if (this.filler === 0 || this.total === undefined) return;
    const last = this.last;
    if (last && this.total >= last.dataEnd && this.total < last.paddedEnd) return;
    throw this.cutHeader();
  }

  /**
   * Explain a parser failure once the input ended off a block boundary past the
   * last entry. With less than a block after that entry, the block completed
   * with filler is the only one the parser can have failed on: the input ended
   * inside a header. With more (extended headers, or a corrupt header the
   * parser met before later entries), it is truncated or corrupt. Returns
   * undefined when the end of the input has nothing to do with the failure.
   */
  parserFailed(cause: unknown): VesselError | undefined {
    if (this.total === undefined || this.filler === 0) return undefined;
    const tail = this.total - (this.last?.paddedEnd ?? 0);
    if (tail <= 0) return undefined;
    if (tail < TAR_BLOCK) {
      const err = this.cutHeader();
      return new VesselError(err.code, err.message, { cause });
    }
    const after = this.last ? ` after entry ${JSON.stringify(this.last.name)}` : '';
    return new VesselError(
      'unsafe_layer',
      `tar stream is truncated or corrupt${after}: ${errorMessage(cause)}`,
      { cause },
    );
  }

  private cutHeader(): VesselError {
    const last = this.last;
    return truncated(
      last
        ? `it ends inside the header block after entry ${JSON.stringify(last.name)}`
        : 'it ends inside the first header block',
    );
  }

  private checkData(span: EntrySpan, total: number): void {
    if (total >= span.dataEnd) return;
    const present = Math.max(0, total - span.dataStart);
    throw truncated(
      `it ends inside the data of entry ${JSON.stringify(span.name)} ` +
        `(${present} of ${span.dataEnd - span.dataStart} bytes present)`,
      span.name,
    );
  }
}
