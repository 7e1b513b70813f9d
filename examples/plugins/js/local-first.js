// local-first: endpoints on this node get weight N (the config string, default 3), the
// others weight 1. The same policy is written in C, Zig, Go, Python and Rust.

export const balancer = {
  Balancer: class {
    constructor(service, config) {
      const n = config.trim() === "" ? 3 : Number(config.trim());
      if (!Number.isInteger(n) || n < 0) {
        throw new Error(`config ${JSON.stringify(config)} is not a whole number`);
      }
      this.local = n;
    }

    update(snapshot) {
      if (this.local === undefined) {
        throw "invalid config";
      }
      const weights = snapshot.endpoints.map((e) => (e.isLocal ? this.local : 1));
      return { tag: "weighted", val: weights };
    }
  },
};
