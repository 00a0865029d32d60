/**
 * The msgpack codec for frames. One configuration for both ends: no records extension (it
 * would make a decoder stateful across frames), no extra types (Date, RegExp, Error, Set…), and
 * 64-bit integers decoded as numbers. Decoding never trusts its input: any failure becomes a
 * BAD_REQUEST, and a frame with trailing bytes is refused rather than half-read.
 */
import { Packr } from 'msgpackr';
import { ErrorCode, TallyError } from './errors.js';
import { MAX_FRAME_BYTES } from './limits.js';

const packr = new Packr({
  useRecords: false,
  moreTypes: false,
  mapsAsObjects: true,
  int64AsType: 'number',
  // Frames may be kept (e.g. queued in a batch); do not alias the decoder's buffer.
  copyBuffers: true,
});

export function encodeFrame(message: unknown): Buffer {
  return packr.pack(message);
}

/** Decodes one frame; throws TallyError TOO_LARGE or BAD_REQUEST. */
export function decodeFrame(bytes: Uint8Array, maxBytes: number = MAX_FRAME_BYTES): unknown {
  if (bytes.length > maxBytes) {
    throw new TallyError(ErrorCode.TOO_LARGE, `frame is ${bytes.length} bytes, the limit is ${maxBytes}`);
  }
  if (bytes.length === 0) throw new TallyError(ErrorCode.BAD_REQUEST, 'frame is empty');
  try {
    return packr.unpack(bytes);
  } catch (err) {
    throw new TallyError(
      ErrorCode.BAD_REQUEST,
      `frame is not one valid MessagePack value: ${(err as Error).message}`,
      { cause: err },
    );
  }
}
