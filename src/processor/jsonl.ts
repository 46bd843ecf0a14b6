import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';
import { StorageError, StreamStateError } from '../errors.js';
import { builtinSerializers, msgpackSerializer } from '../serializers/builtins.js';
import type { Serializer } from '../serializers/serializer.js';
import {
  broadcastEntries,
  keyedLists,
  keyedMaps,
  keyedTimers,
  keyedValues,
  operatorList,
  type BootstrapOperator,
  type KeyedStateInput,
  type OperatorStateInput,
} from './bootstrap.js';
import type { StateKind } from '../state/descriptors.js';

/**
 * The JSON-lines input of `streamstate bootstrap` (docs/CLI.md, "bootstrap"). Declarations
 * (`"type": "operator"`, `"type": "state"`) come before the records of what they declare:
 *
 *   {"type":"operator","id":"counter","parallelism":2,"maxParallelism":128,"keySerializer":"string"}
 *   {"type":"state","operator":"counter","name":"count","kind":"value","serializer":"float64"}
 *   {"operator":"counter","state":"count","key":"user-1","value":3}
 *
 * Serializers are built-in ones by short name (string, float64, int32, int64, boolean, bytes,
 * msgpack) or id (streamstate.string, ...). A line that does not parse, or whose values do not
 * fit the declared serializers, is an InputError naming the file and line; nothing is written.
 */

/** An input line that does not match its declarations (or is not JSON): `line` is 1-based. */
export class InputError extends StreamStateError {
  constructor(
    readonly file: string,
    readonly line: number,
    message: string,
  ) {
    super('INVALID_INPUT', `${file}, line ${line}: ${message}`);
  }
}

type Json = string | number | boolean | null | Json[] | { [k: string]: Json };
type JsonObject = { [k: string]: Json };

/** Turns a JSON value into what a built-in serializer takes, or says why it cannot. */
type Converter = (v: Json) => unknown;

interface NamedSerializer {
  readonly serializer: Serializer<unknown>;
  readonly convert: Converter;
}

const BUILTIN_NAMES = ['string', 'float64', 'int32', 'int64', 'boolean', 'bytes', 'msgpack'] as const;

function mismatch(expected: string, v: Json): never {
  throw new TypeError(`expected ${expected}, got ${JSON.stringify(v)?.slice(0, 60)}`);
}

const converters: Record<(typeof BUILTIN_NAMES)[number], Converter> = {
  string: (v) => (typeof v === 'string' ? v : mismatch('a string', v)),
  float64: (v) => (typeof v === 'number' ? v : mismatch('a number', v)),
  int32: (v) =>
    typeof v === 'number' && Number.isInteger(v) && v >= -(2 ** 31) && v < 2 ** 31
      ? v
      : mismatch('an integer in int32 range', v),
  int64: (v) => {
    const ok = (typeof v === 'number' && Number.isSafeInteger(v)) || (typeof v === 'string' && /^-?[0-9]+$/.test(v));
    if (!ok) mismatch('an integer (a number, or a string of digits)', v);
    const b = BigInt(v as string | number);
    return b >= -(2n ** 63n) && b < 2n ** 63n ? b : mismatch('an integer in int64 range', v);
  },
  boolean: (v) => (typeof v === 'boolean' ? v : mismatch('true or false', v)),
  bytes: (v) => {
    const s = v !== null && typeof v === 'object' && !Array.isArray(v) ? v.$base64 : undefined;
    if (typeof s !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(s)) mismatch('{"$base64": "..."}', v);
    return new Uint8Array(Buffer.from(s as string, 'base64'));
  },
  msgpack: (v) => v,
};

function serializerNamed(name: Json | undefined, fallback: string | undefined, what: string): NamedSerializer {
  const n = name === undefined ? fallback : name;
  if (typeof n !== 'string')
    throw new TypeError(`${what} must name a built-in serializer (${BUILTIN_NAMES.join(', ')})`);
  const short = n.startsWith('streamstate.') ? n.slice('streamstate.'.length) : n;
  if (!(BUILTIN_NAMES as readonly string[]).includes(short)) {
    throw new TypeError(
      `${what} "${n}" is not a built-in serializer (${BUILTIN_NAMES.join(', ')}); bootstrap states with custom serializers through the API (streamstate/processor)`,
    );
  }
  const serializer =
    short === 'msgpack'
      ? (msgpackSerializer() as Serializer<unknown>)
      : builtinSerializers.get(`streamstate.${short}`)!;
  return { serializer, convert: converters[short as (typeof BUILTIN_NAMES)[number]] };
}

type Kind = StateKind | 'timers' | 'split' | 'union' | 'broadcast';
const KINDS: readonly Kind[] = [
  'value',
  'reducing',
  'aggregating',
  'list',
  'map',
  'timers',
  'split',
  'union',
  'broadcast',
];

interface DeclaredState {
  readonly kind: Kind;
  readonly value?: NamedSerializer;
  readonly key?: NamedSerializer;
  readonly namespace: NamedSerializer;
  readonly rows: unknown[];
}

interface DeclaredOperator {
  readonly id: string;
  readonly parallelism: number;
  readonly maxParallelism?: number;
  readonly key?: NamedSerializer;
  readonly states: Map<string, DeclaredState>;
}

function str(o: JsonObject, field: string): string {
  const v = o[field];
  if (typeof v !== 'string' || v.length === 0) throw new TypeError(`"${field}" must be a non-empty string`);
  return v;
}

function int(o: JsonObject, field: string, optional: boolean): number | undefined {
  const v = o[field];
  if (v === undefined && optional) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1)
    throw new TypeError(`"${field}" must be a positive integer`);
  return v;
}

function field(o: JsonObject, name: string): Json {
  if (!(name in o)) throw new TypeError(`the record has no "${name}"`);
  return o[name];
}

function only(o: JsonObject, allowed: readonly string[]): void {
  for (const k of Object.keys(o))
    if (!allowed.includes(k)) throw new TypeError(`unknown field "${k}" (allowed: ${allowed.join(', ')})`);
}

/** JSON lines, as bootstrap takes them. */
type Lines = AsyncIterable<string> | Iterable<string>;

/** Where a state's rows come from when the parser does not keep them (a re-read of the file). */
type RowSource = (operatorId: string, state: string) => AsyncIterable<unknown>;

class Parser {
  readonly operators = new Map<string, DeclaredOperator>();

  /** `keepRows` false: records are checked (converted and serialized) but not kept. */
  constructor(private readonly keepRows = true) {}

  line(o: JsonObject): unknown {
    if (o.type === 'operator') return this.declareOperator(o);
    if (o.type === 'state') return this.declareState(o);
    if (o.type !== undefined)
      throw new TypeError(
        `"type" must be "operator" or "state" (records have no "type"), got ${JSON.stringify(o.type)}`,
      );
    return this.record(o);
  }

  private declareOperator(o: JsonObject): void {
    only(o, ['type', 'id', 'parallelism', 'maxParallelism', 'keySerializer']);
    const id = str(o, 'id');
    if (this.operators.has(id)) throw new TypeError(`operator "${id}" is declared twice`);
    const maxParallelism = int(o, 'maxParallelism', true);
    this.operators.set(id, {
      id,
      parallelism: int(o, 'parallelism', false)!,
      ...(maxParallelism === undefined ? {} : { maxParallelism }),
      ...(o.keySerializer === undefined ? {} : { key: serializerNamed(o.keySerializer, undefined, 'keySerializer') }),
      states: new Map(),
    });
  }

  private operator(o: JsonObject): DeclaredOperator {
    const id = str(o, 'operator');
    const op = this.operators.get(id);
    if (op === undefined)
      throw new TypeError(`operator "${id}" is not declared (declare it first: {"type":"operator","id":"${id}",...})`);
    return op;
  }

  private declareState(o: JsonObject): void {
    only(o, [
      'type',
      'operator',
      'name',
      'kind',
      'serializer',
      'keySerializer',
      'userKeySerializer',
      'namespaceSerializer',
    ]);
    const op = this.operator(o);
    const name = str(o, 'name');
    const kind = o.kind as Kind;
    if (!KINDS.includes(kind))
      throw new TypeError(`"kind" must be one of ${KINDS.join(', ')}, got ${JSON.stringify(o.kind)}`);
    if (op.states.has(name)) throw new TypeError(`state "${name}" of operator "${op.id}" is declared twice`);
    const keyed = kind !== 'split' && kind !== 'union' && kind !== 'broadcast';
    if (keyed && op.key === undefined)
      throw new TypeError(`operator "${op.id}" has keyed state "${name}" but no "keySerializer" in its declaration`);
    op.states.set(name, {
      kind,
      namespace: serializerNamed(o.namespaceSerializer, 'string', 'namespaceSerializer'),
      ...(kind === 'timers' ? {} : { value: serializerNamed(o.serializer, 'msgpack', 'serializer') }),
      ...(kind === 'map' ? { key: serializerNamed(o.userKeySerializer, 'msgpack', 'userKeySerializer') } : {}),
      ...(kind === 'broadcast' ? { key: serializerNamed(o.keySerializer, 'string', 'keySerializer') } : {}),
      rows: [],
    });
  }

  private record(o: JsonObject): unknown {
    const op = this.operator(o);
    const name = str(o, 'state');
    const s = op.states.get(name);
    if (s === undefined)
      throw new TypeError(
        `state "${name}" of operator "${op.id}" is not declared (declare it first: {"type":"state","operator":"${op.id}","name":"${name}","kind":...})`,
      );
    const ns = (): unknown => ('namespace' in o ? s.namespace.convert(o.namespace) : undefined);
    const key = (): unknown => op.key!.convert(field(o, 'key'));
    const value = (v: Json): unknown => s.value!.convert(v);
    const serialize = (x: NamedSerializer, v: unknown): void => void x.serializer.serialize(v);
    let row: unknown;
    switch (s.kind) {
      case 'value':
      case 'reducing':
      case 'aggregating':
        only(o, ['operator', 'state', 'key', 'namespace', 'value']);
        row = { key: key(), namespace: ns(), value: value(field(o, 'value')) };
        break;
      case 'list': {
        only(o, ['operator', 'state', 'key', 'namespace', 'value']);
        const v = field(o, 'value');
        if (!Array.isArray(v)) throw new TypeError('a list record\'s "value" must be an array of elements');
        row = { key: key(), namespace: ns(), value: v.map(value) };
        break;
      }
      case 'map': {
        only(o, ['operator', 'state', 'key', 'namespace', 'userKey', 'value']);
        const v = field(o, 'value');
        row = {
          key: key(),
          namespace: ns(),
          userKey: s.key!.convert(field(o, 'userKey')),
          value: v === null ? null : value(v),
        };
        break;
      }
      case 'timers': {
        only(o, ['operator', 'state', 'key', 'namespace', 'timestamp']);
        const ts = field(o, 'timestamp');
        if (typeof ts !== 'number' || !Number.isFinite(ts))
          throw new TypeError('"timestamp" must be a finite number (ms)');
        row = { key: key(), namespace: ns(), timestamp: ts };
        break;
      }
      case 'split':
      case 'union':
        only(o, ['operator', 'state', 'value']);
        row = value(field(o, 'value'));
        serialize(s.value!, row);
        break;
      case 'broadcast':
        only(o, ['operator', 'state', 'key', 'value']);
        row = [s.key!.convert(field(o, 'key')), value(field(o, 'value'))];
        break;
    }
    // Serialize now so a value a serializer refuses is reported with its line.
    const r = row as { key?: unknown; namespace?: unknown; userKey?: unknown };
    if (s.kind !== 'split' && s.kind !== 'union' && s.kind !== 'broadcast') {
      serialize(op.key!, r.key);
      serialize(s.namespace, r.namespace ?? '');
    }
    if (this.keepRows) s.rows.push(row);
    return row;
  }

  /** A record's row (converted), for re-reads; declarations return undefined. */
  rowOf(o: JsonObject): unknown {
    return this.line(o);
  }

  operatorsToBootstrap(rowSource?: RowSource): BootstrapOperator<unknown>[] {
    return [...this.operators.values()].map((op) => {
      const keyed: KeyedStateInput<unknown>[] = [];
      const operatorState: OperatorStateInput[] = [];
      for (const [name, s] of op.states) {
        const common = { name, namespaceSerializer: s.namespace.serializer };
        const rows = (rowSource === undefined ? s.rows : rowSource(op.id, name)) as never;
        switch (s.kind) {
          case 'value':
            keyed.push(keyedValues({ ...common, kind: 'value', serializer: s.value!.serializer }, rows));
            break;
          case 'reducing':
            keyed.push(
              keyedValues({ ...common, kind: 'reducing', serializer: s.value!.serializer, reduce: (a) => a }, rows),
            );
            break;
          case 'aggregating':
            keyed.push(
              keyedValues(
                {
                  ...common,
                  kind: 'aggregating',
                  accumulatorSerializer: s.value!.serializer,
                  aggregate: { createAccumulator: () => null, add: (_v, a) => a, getResult: (a) => a, merge: (a) => a },
                },
                rows,
              ),
            );
            break;
          case 'list':
            keyed.push(keyedLists({ ...common, kind: 'list', elementSerializer: s.value!.serializer }, rows));
            break;
          case 'map':
            keyed.push(
              keyedMaps(
                { ...common, kind: 'map', userKeySerializer: s.key!.serializer, valueSerializer: s.value!.serializer },
                rows,
              ),
            );
            break;
          case 'timers':
            keyed.push(keyedTimers(name, rows, { namespaceSerializer: s.namespace.serializer }));
            break;
          case 'split':
          case 'union':
            operatorState.push(operatorList(name, s.value!.serializer, rows, s.kind));
            break;
          case 'broadcast':
            operatorState.push(broadcastEntries(name, s.key!.serializer, s.value!.serializer, rows));
            break;
        }
      }
      return {
        operatorId: op.id,
        parallelism: op.parallelism,
        ...(op.maxParallelism === undefined ? {} : { maxParallelism: op.maxParallelism }),
        ...(op.key === undefined ? {} : { keySerializer: op.key.serializer }),
        keyed,
        operatorState,
      };
    });
  }
}

/** Each non-empty line as a JSON object with its 1-based line number; a line that is not one is an InputError. */
async function* jsonObjects(lines: Lines, file: string): AsyncGenerator<{ n: number; o: JsonObject }> {
  let n = 0;
  for await (const text of lines) {
    n++;
    if (text.trim().length === 0) continue;
    let o: Json;
    try {
      o = JSON.parse(text) as Json;
    } catch (err) {
      throw new InputError(file, n, `not valid JSON (${(err as Error).message}).`);
    }
    if (o === null || typeof o !== 'object' || Array.isArray(o))
      throw new InputError(file, n, 'every line must be a JSON object.');
    yield { n, o };
  }
}

/** Feeds every line to `parser`, errors naming the line. Returns the number of lines. */
async function parseAll(parser: Parser, lines: Lines, file: string): Promise<number> {
  let last = 0;
  for await (const { n, o } of jsonObjects(lines, file)) {
    last = n;
    lineError(file, n, () => parser.line(o));
  }
  return last;
}

function lineError<T>(file: string, n: number, fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    if (err instanceof InputError) throw err;
    throw new InputError(file, n, `${(err as Error).message}.`);
  }
}

function checkDeclaresOperators(parser: Parser, file: string, lines: number): void {
  if (parser.operators.size === 0)
    throw new InputError(
      file,
      Math.max(lines, 1),
      'declares no operator; start with {"type":"operator","id":...,"parallelism":...}.',
    );
}

/**
 * Whether iterating `lines` again starts over (an array, a Set, any iterable whose iterator is a
 * new object each time), as opposed to a one-shot iterator (a generator, a stream).
 */
function isReiterable(lines: Lines): boolean {
  if (Symbol.iterator in lines) return lines[Symbol.iterator]() !== (lines as unknown);
  return lines[Symbol.asyncIterator]() !== (lines as unknown);
}

/**
 * Parses JSON lines (empty lines are skipped) into operators for bootstrapSavepoint. Lines that can
 * be iterated again (an array) are checked whole first and then read again per state when
 * bootstrap asks for its records, so the converted records are not held; a one-shot iterable (a
 * generator, a stream) can only be read once, so its records are held in memory: for large input,
 * write it to a file and use readBootstrapFile.
 */
export async function parseBootstrapLines(lines: Lines, file: string): Promise<BootstrapOperator<unknown>[]> {
  if (isReiterable(lines)) return checkThenReread(() => lines, file);
  const parser = new Parser();
  checkDeclaresOperators(parser, file, await parseAll(parser, lines, file));
  return parser.operatorsToBootstrap();
}

/**
 * Checks every line of `open()` (converted and serialized, errors naming the line) without keeping
 * the records, then returns operators whose states read their records from `open()` again when
 * bootstrap asks for them (one pass per state), so memory does not grow with the input.
 */
async function checkThenReread(open: () => Lines, file: string): Promise<BootstrapOperator<unknown>[]> {
  const parser = new Parser(false);
  checkDeclaresOperators(parser, file, await parseAll(parser, open(), file));
  const rowsOf: RowSource = (operatorId, state) => ({
    async *[Symbol.asyncIterator]() {
      // Declarations are parsed again (cheap); records of other states are skipped unconverted.
      const again = new Parser(false);
      for await (const { n, o } of jsonObjects(open(), file)) {
        if (o.type === undefined && (o.operator !== operatorId || o.state !== state)) continue;
        const row = lineError(file, n, () => again.rowOf(o));
        if (o.type === undefined) yield row;
      }
    },
  });
  return parser.operatorsToBootstrap(rowsOf);
}

/** The lines of a local file; a missing or unreadable file is a StorageError. */
async function* fileLines(path: string, display: string): AsyncGenerator<string> {
  const stream = createReadStream(path, { encoding: 'utf8' });
  const opened = new Promise<void>((resolve, reject) => {
    stream.once('open', () => resolve());
    stream.once('error', reject);
  });
  try {
    await opened;
  } catch (err) {
    stream.destroy();
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT')
      throw new StorageError('NOT_FOUND', `${display}: no such file. Check the path.`, { cause: err });
    throw new StorageError('STORAGE_IO', `${display}: cannot read (${(err as Error).message}).`, { cause: err });
  }
  const rl = createInterface({ input: stream, crlfDelay: Infinity });
  try {
    yield* rl;
  } catch (err) {
    if (err instanceof StreamStateError) throw err;
    throw new StorageError('STORAGE_IO', `${display}: cannot read (${(err as Error).message}).`, { cause: err });
  } finally {
    rl.close();
    stream.destroy();
  }
}

/**
 * Reads a JSON-lines file (local path) for bootstrap without holding its records: the whole file
 * is checked first (every record converted and serialized, errors naming the line), then each
 * state's records are read again from the file when bootstrap asks for them (one pass per state),
 * so memory does not grow with the file.
 */
export async function readBootstrapFile(path: string, display = path): Promise<BootstrapOperator<unknown>[]> {
  return checkThenReread(() => fileLines(path, display), display);
}
