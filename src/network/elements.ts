/**
 * Book-keeping of the firewall's per-instance set elements: which egress addresses and
 * which peer pairs nft holds right now. Changes are serialised, so concurrent attaches of
 * two group members still add their pair once, and a release deletes exactly what exists
 * (nft refuses to delete a missing element, which would fail the whole transaction).
 */
import { Mutex } from '../core/sync.js';
import type { Firewall } from './firewall.js';

export class ElementBook {
  readonly #fw: Firewall;
  readonly #lock = new Mutex();
  readonly #pairs = new Set<string>();
  readonly #egress = new Set<string>();

  constructor(firewall: Firewall) {
    this.#fw = firewall;
  }

  /**
   * Add `tap`'s egress address (when asked for) and its pairs with `peers()`. Both
   * `peers()` and `onAdded()` run under the lock, so a member marked in `onAdded` is seen
   * by every later `peers()`.
   */
  add(
    tap: string,
    req: { ip: string; egress: boolean },
    peers: () => readonly string[],
    onAdded: () => void,
  ): Promise<void> {
    return this.#lock.run(async () => {
      const fresh = peers().filter((p) => !this.#pairs.has(`${tap}\t${p}`));
      const egress = req.egress && !this.#egress.has(req.ip);
      await this.#fw.attach({ tap, ip: req.ip, egress, peers: fresh });
      if (egress) this.#egress.add(req.ip);
      for (const p of fresh) {
        this.#pairs.add(`${tap}\t${p}`);
        this.#pairs.add(`${p}\t${tap}`);
      }
      onAdded();
    });
  }

  /** Delete every element of `tap` that exists; `onRemoving` runs first, under the lock. */
  remove(
    tap: string,
    req: { ip: string; egress: boolean },
    onRemoving: () => void = () => undefined,
  ): Promise<void> {
    return this.#lock.run(async () => {
      onRemoving();
      const peers = [...this.#pairs]
        .map((k) => k.split('\t'))
        .filter(([a]) => a === tap)
        .map(([, b]) => b ?? '');
      const egress = req.egress && this.#egress.has(req.ip);
      await this.#fw.detach({ tap, ip: req.ip, egress, peers });
      if (egress) this.#egress.delete(req.ip);
      for (const p of peers) {
        this.#pairs.delete(`${tap}\t${p}`);
        this.#pairs.delete(`${p}\t${tap}`);
      }
    });
  }
}
