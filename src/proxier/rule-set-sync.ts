// The sync bookkeeping the rule-set interceptors (iptables, nftables) share: the first sync, and
// any sync after a failure or a detected drift, installs everything; the others apply only the
// difference to what was installed last.
import type { InterceptTarget } from './interceptor.ts';
import { type KeyedTargets, keyTargets } from './iptables-render.ts';

/** What a rule-set backend does; the state around it lives in RuleSetSync. */
export interface RuleSetBackend {
  /** Installs exactly `targets`, replacing whatever of ours is there. */
  applyFull(targets: readonly InterceptTarget[]): Promise<void>;
  /** The payload that turns `previous` into `next` (undefined: nothing to do). */
  renderDelta(previous: KeyedTargets, next: KeyedTargets): string | undefined;
  /** Applies a payload made by renderDelta. */
  applyDelta(payload: string): Promise<void>;
  /** Whether what is installed still matches `targets`. */
  installed(targets: readonly InterceptTarget[]): Promise<boolean>;
}

/** Full-or-delta sync and drift repair over one backend; what the interceptors' sync/repair call. */
export class RuleSetSync {
  private applied: InterceptTarget[] | undefined;
  /** `applied` keyed, kept so a one-service change diffs against it without re-keying. */
  private appliedKeys: KeyedTargets = new Map();
  private fullNext = true;

  constructor(private readonly backend: RuleSetBackend) {}

  /** Forgets what was installed (after start's or stop's cleanup): the next sync installs everything. */
  reset(): void {
    this.applied = undefined;
    this.fullNext = true;
  }

  async sync(targets: readonly InterceptTarget[]): Promise<void> {
    const next = [...targets];
    try {
      if (this.fullNext || !this.applied) {
        await this.backend.applyFull(next);
        this.fullNext = false;
        this.appliedKeys = keyTargets(next);
      } else {
        const nextKeys = keyTargets(next);
        const delta = this.backend.renderDelta(this.appliedKeys, nextKeys);
        this.appliedKeys = nextKeys;
        if (delta) await this.backend.applyDelta(delta);
      }
      this.applied = next;
    } catch (err) {
      // State unknown now: the next sync renders everything from what is really installed.
      this.fullNext = true;
      throw err;
    }
  }

  /** Drift check: when the installed rules differ from the last sync, re-installs them; true when it repaired. */
  async repair(): Promise<boolean> {
    if (!this.applied) return false;
    if (await this.backend.installed(this.applied)) return false;
    this.fullNext = true;
    await this.sync(this.applied);
    return true;
  }
}
