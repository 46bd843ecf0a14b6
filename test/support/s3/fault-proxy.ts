import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * An HTTP proxy on 127.0.0.1 in front of an S3 server that injects faults by rule: 503 SlowDown,
 * 500s, arbitrary statuses, connection resets (before the request is read, halfway through its
 * body, or halfway through the response body) and delays. Which request a rule hits is decided by
 * a seeded RNG, so a failing run can be replayed. Every rule is bounded by `times`.
 *
 * The proxy forwards headers unchanged (Host included), so SigV4 signatures made for the proxy's
 * address verify at the server.
 */
export type FaultKind =
  | 'slowdown' // 503 SlowDown (retryable throttling)
  | 'internal-error' // 500 InternalError (retryable)
  | 'status' // `status` + `code`, e.g. 412 PreconditionFailed or 501 NotImplemented
  | 'reset' // destroy the connection before reading the request
  | 'reset-mid-request' // read about half of the request body, then destroy the connection
  | 'reset-mid-response' // forward, send headers and half the response body, then destroy
  | 'delay'; // wait `delayMs`, then forward

export interface FaultRule {
  readonly fault: FaultKind;
  /** HTTP method to match (GET, PUT, POST, HEAD, DELETE). */
  readonly method?: string;
  /** Query parameter that must be present, optionally with a value: "partNumber", "partNumber=2", "uploads", "delete". */
  readonly query?: string;
  /** Substring of the path (bucket/key) that must be present. */
  readonly pathIncludes?: string;
  /** Substring of the path that must be absent. */
  readonly pathExcludes?: string;
  /** A header that must be present (lower case), e.g. "if-none-match". */
  readonly header?: string;
  /** Chance that a matching request is hit. Default 1. */
  readonly probability?: number;
  /** How many times the rule may fire. Default 1: faults are bounded unless a test asks for more. */
  readonly times?: number;
  readonly delayMs?: number;
  readonly status?: number;
  readonly code?: string;
}

export interface FaultProxyStats {
  /** Requests received (including faulted ones). */
  requests: number;
  /** Requests per "METHOD kind", kind being the S3 sub-resource (uploads, partNumber, delete, list-type) or "object". */
  readonly byKind: Record<string, number>;
  /** Faults injected per kind. */
  readonly faults: Record<string, number>;
}

export interface FaultProxy {
  /** http://127.0.0.1:<port>: use as the store's endpoint. */
  readonly endpoint: string;
  readonly stats: FaultProxyStats;
  /** Replaces the rules (and their remaining counts). */
  setRules(rules: readonly FaultRule[]): void;
  resetStats(): void;
  stop(): Promise<void>;
}

/** mulberry32: small, fast, seedable. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const SUBRESOURCES = ['uploadId', 'partNumber', 'uploads', 'delete', 'list-type'];

function requestKind(req: IncomingMessage, url: URL): string {
  const sub = SUBRESOURCES.filter((s) => url.searchParams.has(s));
  return `${req.method} ${sub.length > 0 ? sub.join('+') : 'object'}`;
}

function s3ErrorXml(code: string, message: string): string {
  return `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${message}</Message><RequestId>fault-proxy</RequestId></Error>`;
}

export async function startFaultProxy(opts: {
  target: string;
  seed?: number;
  rules?: readonly FaultRule[];
}): Promise<FaultProxy> {
  const target = new URL(opts.target);
  const random = seededRandom(opts.seed ?? 1);
  const upstreamAgent = new http.Agent({ keepAlive: true, maxSockets: 64 });
  let rules: Array<{ rule: FaultRule; remaining: number }> = [];
  const stats: FaultProxyStats = { requests: 0, byKind: {}, faults: {} };

  const setRules = (next: readonly FaultRule[]): void => {
    rules = next.map((rule) => ({ rule, remaining: rule.times ?? 1 }));
  };
  setRules(opts.rules ?? []);

  const matches = (rule: FaultRule, req: IncomingMessage, url: URL): boolean => {
    if (rule.method !== undefined && rule.method !== req.method) return false;
    if (rule.pathIncludes !== undefined && !decodeURIComponent(url.pathname).includes(rule.pathIncludes)) return false;
    if (rule.pathExcludes !== undefined && decodeURIComponent(url.pathname).includes(rule.pathExcludes)) return false;
    if (rule.header !== undefined && req.headers[rule.header] === undefined) return false;
    if (rule.query !== undefined) {
      const [name, value] = rule.query.split('=');
      if (!url.searchParams.has(name)) return false;
      if (value !== undefined && url.searchParams.get(name) !== value) return false;
    }
    return true;
  };

  const pick = (req: IncomingMessage, url: URL): FaultRule | undefined => {
    for (const entry of rules) {
      if (entry.remaining <= 0 || !matches(entry.rule, req, url)) continue;
      if (random() >= (entry.rule.probability ?? 1)) continue;
      entry.remaining--;
      return entry.rule;
    }
    return undefined;
  };

  const respondError = (
    req: IncomingMessage,
    res: ServerResponse,
    status: number,
    code: string,
    message: string,
  ): void => {
    // Read the request body first, or the client may see EPIPE instead of our answer.
    req.resume();
    req.on('end', () => {
      const body = s3ErrorXml(code, message);
      res.writeHead(status, { 'content-type': 'application/xml', 'content-length': Buffer.byteLength(body) });
      res.end(req.method === 'HEAD' ? undefined : body);
    });
  };

  const forward = (req: IncomingMessage, res: ServerResponse, cutResponse: boolean): void => {
    const upstream = http.request(
      {
        host: target.hostname,
        port: target.port,
        method: req.method,
        path: req.url,
        headers: req.headers,
        agent: upstreamAgent,
      },
      (up) => {
        if (!cutResponse) {
          res.writeHead(up.statusCode ?? 502, up.headers);
          up.pipe(res);
          return;
        }
        const chunks: Buffer[] = [];
        up.on('data', (c: Buffer) => chunks.push(c));
        up.on('end', () => {
          const body = Buffer.concat(chunks);
          res.writeHead(up.statusCode ?? 502, up.headers);
          // Half the body, then the connection dies: the client sees a truncated response.
          res.write(body.subarray(0, Math.floor(body.length / 2)), () => res.socket?.destroy());
        });
      },
    );
    upstream.on('error', () => res.socket?.destroy());
    req.pipe(upstream);
  };

  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://proxy');
    stats.requests++;
    const kind = requestKind(req, url);
    stats.byKind[kind] = (stats.byKind[kind] ?? 0) + 1;
    const rule = pick(req, url);
    if (rule === undefined) {
      forward(req, res, false);
      return;
    }
    stats.faults[rule.fault] = (stats.faults[rule.fault] ?? 0) + 1;
    switch (rule.fault) {
      case 'slowdown':
        respondError(req, res, 503, 'SlowDown', 'Please reduce your request rate.');
        return;
      case 'internal-error':
        respondError(req, res, 500, 'InternalError', 'We encountered an internal error. Please try again.');
        return;
      case 'status':
        respondError(req, res, rule.status ?? 500, rule.code ?? 'InternalError', `injected ${rule.status ?? 500}`);
        return;
      case 'reset':
        req.socket.destroy();
        return;
      case 'reset-mid-request': {
        const total = Number(req.headers['content-length'] ?? 0);
        let seen = 0;
        req.on('data', (c: Buffer) => {
          seen += c.length;
          if (seen >= total / 2) req.socket.destroy();
        });
        req.on('end', () => req.socket.destroy());
        return;
      }
      case 'reset-mid-response':
        forward(req, res, true);
        return;
      case 'delay':
        setTimeout(() => forward(req, res, false), rule.delayMs ?? 100);
        return;
    }
  });

  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;

  return {
    endpoint: `http://127.0.0.1:${port}`,
    stats,
    setRules,
    resetStats() {
      stats.requests = 0;
      for (const k of Object.keys(stats.byKind)) delete stats.byKind[k];
      for (const k of Object.keys(stats.faults)) delete stats.faults[k];
    },
    async stop() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      upstreamAgent.destroy();
    },
  };
}
