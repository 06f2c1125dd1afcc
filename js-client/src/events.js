// @ts-check
// Listeners: the named events an object offers (`on`/`off`) and their delivery.  The context
// ("open", "close", "error") and the SUB socket ("gap") both use it; a listener that throws
// does not stop the others, its exception goes to `failed`.

/**
 * @template {Record<string, unknown>} Events  event name -> payload type
 */
export class Listeners {
  /**
   * @param {(keyof Events & string)[]} names  the events offered
   * @param {(event: keyof Events & string, error: unknown) => void} failed  hears a listener's exception
   */
  constructor(names, failed) {
    /** @type {Map<string, Set<(payload: any) => void>>} */
    this._sets = new Map(names.map((name) => [name, new Set()]));
    this._failed = failed;
  }

  /**
   * @param {string} event
   * @param {(payload: any) => void} fn
   */
  add(event, fn) {
    const set = this._sets.get(event);
    if (!set) {
      throw new TypeError(`unknown event ${JSON.stringify(event)} (${[...this._sets.keys()].join(", ")})`);
    }
    if (typeof fn !== "function") throw new TypeError("a listener is a function");
    set.add(fn);
  }

  /**
   * @param {string} event
   * @param {(payload: any) => void} fn
   */
  delete(event, fn) {
    this._sets.get(event)?.delete(fn);
  }

  /**
   * How many listeners `event` has.
   * @param {keyof Events & string} event
   */
  count(event) {
    return this._sets.get(event)?.size ?? 0;
  }

  /**
   * Call every listener of `event` with `payload`, in the order they were added.
   * @template {keyof Events & string} E
   * @param {E} event
   * @param {Events[E]} payload
   */
  emit(event, payload) {
    for (const fn of [...(this._sets.get(event) ?? [])]) {
      try {
        fn(payload);
      } catch (e) {
        this._failed(event, e);
      }
    }
  }
}
