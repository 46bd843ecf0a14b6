import { FormatError } from '../errors.js';

/**
 * The operator-state stream (docs/FORMAT.md, "operator state stream"):
 *
 *   magic "SSOP" | version u8 | records...
 *
 * A record is `bytes(element)` for list states and `bytes(key) bytes(value)` for broadcast
 * states (ByteWriter.bytes: varint length + bytes). Records carry no state name: the handle lists,
 * per state, the byte offset of each of its records, which is what lets the coordinator
 * redistribute single elements on rescaling without reading the stream.
 */
export const OPERATOR_STREAM_MAGIC = Buffer.from('SSOP', 'latin1');
export const OPERATOR_STREAM_VERSION = 1;
export const OPERATOR_STREAM_HEADER_LENGTH = OPERATOR_STREAM_MAGIC.length + 1;

/** Checks magic and version of an operator-state stream read from `where`. */
export function checkStreamHeader(bytes: Buffer, where: string): void {
  if (
    bytes.length < OPERATOR_STREAM_HEADER_LENGTH ||
    !bytes.subarray(0, OPERATOR_STREAM_MAGIC.length).equals(OPERATOR_STREAM_MAGIC)
  ) {
    throw new FormatError(
      'BAD_MAGIC',
      `${where} is not an operator-state stream (bad magic). The handle points at the wrong file; check the checkpoint's _metadata.`,
    );
  }
  const version = bytes[OPERATOR_STREAM_MAGIC.length];
  if (version !== OPERATOR_STREAM_VERSION) {
    throw new FormatError(
      'UNSUPPORTED_VERSION',
      `${where} uses operator-state stream version ${version}; this streamstate reads version ${OPERATOR_STREAM_VERSION}. Upgrade streamstate to restore it.`,
    );
  }
}

/** A record offset must point inside the stream, after the header. */
export function checkOffset(offset: number, length: number, where: string): void {
  if (!Number.isInteger(offset) || offset < OPERATOR_STREAM_HEADER_LENGTH || offset >= length) {
    throw new FormatError(
      'CORRUPT',
      `${where}: element offset ${offset} lies outside the stream (${length} bytes). The handle in _metadata is damaged.`,
    );
  }
}
