/**
 * Every size and range bound of the wire protocol, in one place. Each is documented in the
 * README; raising one is a protocol change, so both ends must agree.
 */

/** Version exchanged in the hello; a node refuses a peer or client that speaks another. */
export const PROTOCOL_VERSION = 1;

/** Largest frame a node accepts and answers. 1 MiB holds a full batch of events with room to spare. */
export const MAX_FRAME_BYTES = 1024 * 1024;
/**
 * Frames above MAX_FRAME_BYTES but at most this size are read and answered with TOO_LARGE on a
 * connection that stays open; beyond it the WebSocket layer closes the connection (code 1009)
 * without reading the rest, so a hostile sender cannot make a node buffer without bound.
 */
export const MAX_WIRE_FRAME_BYTES = 4 * MAX_FRAME_BYTES;

/** Events in one count request. Bounds the memory and the group-commit work one frame can cause. */
export const MAX_EVENTS_PER_BATCH = 10_000;
/** Range queries in one get request. */
export const MAX_QUERIES_PER_GET = 1_000;

/** UTF-8 bytes of a videoId. Keys are stored verbatim; long keys waste every replica's disk. */
export const MAX_VIDEO_ID_BYTES = 256;
/** UTF-8 bytes of an eventType ("view", "like", "watch_ms", …). */
export const MAX_EVENT_TYPE_BYTES = 64;
/** UTF-8 bytes of a node id, zone or cluster name. */
export const MAX_NAME_BYTES = 64;
/** UTF-8 bytes of a host:port address. */
export const MAX_ADDRESS_BYTES = 300;

/** Earliest event time accepted: 2000-01-01T00:00:00Z. Earlier event times are almost surely bugs (seconds for ms). */
export const MIN_EVENT_TIME_MS = Date.UTC(2000, 0, 1);
/** Latest time accepted anywhere: 2100-01-01T00:00:00Z. Later times are almost surely bugs (µs for ms). */
export const MAX_TIME_MS = Date.UTC(2100, 0, 1);
/** How far into the future of the node's clock an event may be: clocks drift, but not by a day. */
export const MAX_EVENT_FUTURE_SKEW_MS = 24 * 60 * 60 * 1000;

/**
 * Largest value of one event (e.g. watch time in ms: 10^9 ms is 11.5 days). Sums are float64:
 * exact for integer values while a bucket's sum stays under 2^53 (9 * 10^15), close otherwise.
 */
export const MAX_EVENT_VALUE = 1e9;
/** Largest multiplicity of one event tuple (n identical events sent as one). */
export const MAX_EVENT_COUNT = 1_000_000;

/**
 * Longest batch id: a client's id for one count request, so a retry is never applied twice. A
 * node forwarding the batch appends its own id, so room is left for that.
 */
export const MAX_BATCH_ID_BYTES = 160;

/** Largest replication factor: copies of every key. Three is the usual; more than 7 is waste. */
export const MAX_REPLICATION_FACTOR = 7;
/** Most days a retention can name (about 100 years); beyond it, keep for ever (0). */
export const MAX_RETENTION_DAYS = 36_500;

/** Longest client token a hello may carry. */
export const MAX_TOKEN_CHARS = 256;

/** Largest request id; ids are unsigned 32-bit so they stay small on the wire. */
export const MAX_REQUEST_ID = 0xffff_ffff;
/** Longest error message a node sends; messages are for people and are cut to this. */
export const MAX_ERROR_MESSAGE_CHARS = 1_000;
