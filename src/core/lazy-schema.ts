/**
 * A config schema built when it is first asked for and let go once nothing uses it: the same
 * instance while something holds it (a parse, a schema built of it), a new one after that.
 *
 * zod's schemas are heavy objects (about 2.5 KiB each of the ~1,450 nodes of Ferry's config:
 * the gateway's, the bridges' with every component kind, the devices'), and a schema kept in a
 * module's constant lives as long as the process, though `ferry run` parses its config once at
 * the start and again only on a reload. Built through this, they go with the start's garbage
 * (src/runtime/startup-garbage.ts), about 2 MB of an idle gateway's heap, and a reload builds
 * them again (about 11 ms of CPU here). Leaf schemas that many others extend (a port, a name)
 * stay plain constants: they are a node each.
 */
export function lazySchema<T extends object>(build: () => T): () => T {
  let held: WeakRef<T> | undefined;
  return () => {
    let schema = held?.deref();
    if (schema === undefined) {
      schema = build();
      held = new WeakRef(schema);
    }
    return schema;
  };
}
