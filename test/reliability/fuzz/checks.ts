/**
 * The fuzz figures and the checks behind them. Each broken rule is counted, and its first
 * few cases are kept with the exact request and response for the failure message.
 */
import { describeRequest, type FuzzRequest } from './request.js';
import { describeResponse, type FuzzResponse } from './send.js';

const EXAMPLES = 5;

/** `{code, message}` (both strings) in a JSON body, or why not. */
export function errorShapeProblem(contentType: string, body: Buffer): string | undefined {
  if (!contentType.startsWith('application/json')) return `content-type is "${contentType}"`;
  let parsed: unknown;
  try {
    parsed = JSON.parse(body.toString('utf8'));
  } catch {
    return 'body is not JSON';
  }
  const b = parsed as { code?: unknown; message?: unknown } | null;
  if (typeof b?.code !== 'string' || typeof b.message !== 'string')
    return 'body has no string code and message';
  return undefined;
}

export class Tally {
  readonly counts = new Map<string, number>();
  readonly examples = new Map<string, string[]>();
  readonly statuses = new Map<number, number>();
  /** Total milliseconds spent per operation (where the wall time goes). */
  readonly msByOperation = new Map<string, number>();
  /** The slowest answered exchanges, slowest first. */
  readonly slowest: Array<{ ms: number; what: string }> = [];

  count(rule: string, by = 1): void {
    this.counts.set(rule, (this.counts.get(rule) ?? 0) + by);
  }

  get(rule: string): number {
    return this.counts.get(rule) ?? 0;
  }

  /** Count a broken rule and keep the case (up to a few per rule). */
  fail(rule: string, what: string): void {
    this.count(rule);
    const list = this.examples.get(rule) ?? [];
    if (list.length < EXAMPLES) list.push(what);
    this.examples.set(rule, list);
  }

  /** The checks every fuzzed response passes: no 5xx, no hang, 4xx bodies are the error shape. */
  check(via: string, req: FuzzRequest, res: FuzzResponse): void {
    this.count(`sent_${via}`);
    this.statuses.set(res.status, (this.statuses.get(res.status) ?? 0) + 1);
    const what = `via ${via}: ${describeRequest(req)}\n    → ${describeResponse(res)}`;
    this.noteLatency(res.ms, what);
    this.msByOperation.set(
      req.operationId,
      (this.msByOperation.get(req.operationId) ?? 0) + res.ms,
    );
    if (res.failure === 'timeout') this.fail('timeouts', what);
    else if (res.failure === 'unsendable') this.fail('unsendable', what);
    else if (res.failure) this.fail('closed_without_response', what);
    else if (res.status >= 500) this.fail('5xx', what);
    else if (res.status >= 400 && res.body.length > 0) {
      const problem = errorShapeProblem(res.contentType, res.body);
      if (problem) this.fail('non_json_4xx', `${what}\n    (${problem})`);
    }
  }

  private noteLatency(ms: number, what: string): void {
    if (this.slowest.length >= EXAMPLES && ms <= this.slowest.at(-1)!.ms) return;
    this.slowest.push({ ms, what });
    this.slowest.sort((a, b) => b.ms - a.ms);
    this.slowest.length = Math.min(this.slowest.length, EXAMPLES);
  }

  /** Every broken rule with its examples, for an assertion message. */
  report(rules: readonly string[]): string {
    return rules
      .filter((r) => this.get(r) > 0)
      .map((r) => `${r}: ${this.get(r)}\n  ${(this.examples.get(r) ?? []).join('\n  ')}`)
      .join('\n');
  }
}
