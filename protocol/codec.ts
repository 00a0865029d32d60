/**
 * The msgpack codec for frames. One configuration for both ends: no records extension (it
 * would make a decoder stateful across frames), no extra types (Date, RegExp, Error, Set…), and
 * 64-bit integers decoded as numbers. Decoding never trusts its input: any failure becomes a
 * BAD_REQUEST, and a frame with trailing bytes is refused rather than half-read.
 *
 * msgpackr makes an array as long as its header declares before it reads an element: five bytes
 * (`dd` and a 32-bit count) would have it allocate hundreds of MB and end the process, a fault no
 * `try` catches, and a chain of array16 headers does the same in a few KB. So a frame's shape is
 * walked first ({@link checkShape}), cheaply, without building anything.
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
  checkShape(bytes);
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

/** Deeper than any frame Tally sends; the decoder recurses once a level. */
export const MAX_FRAME_DEPTH = 32;
const openLeft = new Float64Array(MAX_FRAME_DEPTH + 1);

function shapeError(what: string, at: number): TallyError {
  return new TallyError(ErrorCode.BAD_REQUEST, `frame is not one valid MessagePack value: ${what} at byte ${at}`);
}

/**
 * Walks one MessagePack value's headers, skipping payloads, and refuses a frame that would make
 * the decoder allocate for elements that are not there or recurse past MAX_FRAME_DEPTH. Every
 * value takes at least a byte, so in a whole frame the values still owed never outnumber the
 * bytes left: checked at each array and map header, this bounds what decoding can allocate by
 * the frame's length, however the headers nest. Also refuses a frame that ends inside a value or
 * goes on after it, and extensions other than undefined and a timestamp.
 */
export function checkShape(b: Uint8Array): void {
  const n = b.length;
  let pos = 0;
  let owed = 1; // values still to read, over every open level
  let top = 0; // open levels; openLeft[top] = values left at the innermost
  openLeft[0] = 1;
  while (top >= 0) {
    if (openLeft[top] === 0) {
      top -= 1;
      continue;
    }
    openLeft[top]! -= 1;
    owed -= 1;
    if (pos >= n) throw shapeError('it ends inside a value', pos);
    const at = pos;
    const t = b[pos++]!;
    let items = 0;
    let len = 0; // bytes of the length field
    let skip = 0; // payload bytes after it
    if (t <= 0x7f || t >= 0xe0) {
      // fixint
    } else if (t <= 0x8f) items = (t & 0x0f) * 2;
    else if (t <= 0x9f) items = t & 0x0f;
    else if (t <= 0xbf) skip = t & 0x1f;
    else {
      switch (t) {
        case 0xc0: case 0xc2: case 0xc3: break;
        case 0xcc: case 0xd0: skip = 1; break;
        case 0xcd: case 0xd1: skip = 2; break;
        case 0xca: case 0xce: case 0xd2: skip = 4; break;
        case 0xcb: case 0xcf: case 0xd3: skip = 8; break;
        case 0xd4: skip = 2; break;
        case 0xd5: skip = 3; break;
        case 0xd6: skip = 5; break;
        case 0xd7: skip = 9; break;
        case 0xd8: skip = 17; break;
        case 0xc4: case 0xd9: len = 1; break;
        case 0xc5: case 0xda: len = 2; break;
        case 0xc6: case 0xdb: len = 4; break;
        case 0xc7: len = 1; skip = 1; break;
        case 0xc8: len = 2; skip = 1; break;
        case 0xc9: len = 4; skip = 1; break;
        case 0xdc: case 0xde: len = 2; break;
        case 0xdd: case 0xdf: len = 4; break;
        default: throw shapeError(`byte 0x${t.toString(16)} begins no value`, at);
      }
      if (len > 0) {
        if (pos + len > n) throw shapeError('it ends inside a length', at);
        let v = 0;
        for (let i = 0; i < len; i++) v = v * 256 + b[pos + i]!;
        pos += len;
        if (t >= 0xdc) items = t >= 0xde ? v * 2 : v;
        else skip += v;
      }
    }
    if ((t >= 0xd4 && t <= 0xd8) || (t >= 0xc7 && t <= 0xc9)) {
      // An extension: its type byte follows the header (and length). Tally's packer writes only
      // undefined (0) and a timestamp (-1); others (records, Set, Error, structured-clone
      // references) make msgpackr read values out of the order walked here.
      if (pos >= n) throw shapeError('it ends inside a value', at);
      const type = b[pos]!;
      if (type !== 0x00 && type !== 0xff) throw shapeError(`extension type ${type} is not one Tally uses`, at);
    }
    pos += skip;
    if (pos > n) throw shapeError('it ends inside a value', at);
    if (items > 0) {
      owed += items;
      if (owed > n - pos) throw shapeError(`${owed} values are owed and ${n - pos} bytes are left`, at);
      if (top === MAX_FRAME_DEPTH) throw shapeError(`it nests deeper than ${MAX_FRAME_DEPTH}`, at);
      openLeft[++top] = items;
    }
  }
  if (pos !== n) throw shapeError(`${n - pos === 1 ? '1 byte follows' : `${n - pos} bytes follow`} the value`, pos);
}
