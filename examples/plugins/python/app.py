"""local-first: endpoints on this node get weight N (the config string, default 3), the others
weight 1. The same policy is written in C, Zig, Go, JavaScript and Rust.

componentize-py looks for the exported interface here and for its resource in balancer.py."""

from wit_world import exports


class Balancer(exports.Balancer):
    pass
