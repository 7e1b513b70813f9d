;; The WASI preview 1 functions Go's wasip1 runtime imports, as a component adapter that needs
;; no state and no allocation.
;;
;; wasmtime's preview1 adapter allocates its state through the module's `cabi_realloc` on the
;; first WASI call, and Go makes its first WASI calls while initialising its runtime, before
;; any Go function (such as its `cabi_realloc`) may run: the component trapped at
;; instantiation. A balancer plugin gets no clock, randomness, environment or output from the
;; host anyway (its WASI is deny-all), so these stand-ins give Go what it needs to run:
;; - no arguments and no environment;
;; - a clock that starts at zero and advances 1 µs per reading, and by every sleep;
;; - pseudo-random bytes (splitmix64 from a fixed seed);
;; - writes (panic messages) are accepted and dropped.
(module
  (import "env" "memory" (memory 0))
  (global $now (mut i64) (i64.const 0))
  (global $seed (mut i64) (i64.const 0x7761737067726e67))

  (func (export "sched_yield") (result i32) (i32.const 0))
  (func (export "proc_exit") (param i32) (unreachable))

  ;; args_sizes_get / environ_sizes_get: zero entries, zero bytes.
  (func $none (param $count i32) (param $bytes i32) (result i32)
    (i32.store (local.get $count) (i32.const 0))
    (i32.store (local.get $bytes) (i32.const 0))
    (i32.const 0))
  (func (export "args_sizes_get") (param i32 i32) (result i32)
    (call $none (local.get 0) (local.get 1)))
  (func (export "environ_sizes_get") (param i32 i32) (result i32)
    (call $none (local.get 0) (local.get 1)))
  (func (export "args_get") (param i32 i32) (result i32) (i32.const 0))
  (func (export "environ_get") (param i32 i32) (result i32) (i32.const 0))

  (func (export "clock_time_get") (param $id i32) (param $precision i64) (param $out i32) (result i32)
    (global.set $now (i64.add (global.get $now) (i64.const 1000)))
    (i64.store (local.get $out) (global.get $now))
    (i32.const 0))

  ;; fd_write: report every byte written, keep none.
  (func (export "fd_write") (param $fd i32) (param $iovs i32) (param $n i32) (param $written i32) (result i32)
    (local $sum i32)
    (block $done
      (loop $next
        (br_if $done (i32.eqz (local.get $n)))
        (local.set $sum (i32.add (local.get $sum) (i32.load offset=4 (local.get $iovs))))
        (local.set $iovs (i32.add (local.get $iovs) (i32.const 8)))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $next)))
    (i32.store (local.get $written) (local.get $sum))
    (i32.const 0))

  (func (export "random_get") (param $buf i32) (param $len i32) (result i32)
    (local $z i64)
    (block $done
      (loop $next
        (br_if $done (i32.eqz (local.get $len)))
        ;; splitmix64
        (global.set $seed (i64.add (global.get $seed) (i64.const 0x9e3779b97f4a7c15)))
        (local.set $z (global.get $seed))
        (local.set $z (i64.mul (i64.xor (local.get $z) (i64.shr_u (local.get $z) (i64.const 30)))
                               (i64.const 0xbf58476d1ce4e5b9)))
        (local.set $z (i64.mul (i64.xor (local.get $z) (i64.shr_u (local.get $z) (i64.const 27)))
                               (i64.const 0x94d049bb133111eb)))
        (local.set $z (i64.xor (local.get $z) (i64.shr_u (local.get $z) (i64.const 31))))
        (i32.store8 (local.get $buf) (i32.wrap_i64 (local.get $z)))
        (local.set $buf (i32.add (local.get $buf) (i32.const 1)))
        (local.set $len (i32.sub (local.get $len) (i32.const 1)))
        (br $next)))
    (i32.const 0))

  ;; poll_oneoff: sleeping advances the clock by the first clock subscription's timeout;
  ;; no event is reported.
  (func (export "poll_oneoff") (param $in i32) (param $out i32) (param $n i32) (param $nevents i32) (result i32)
    (block $done
      (loop $next
        (br_if $done (i32.eqz (local.get $n)))
        (if (i32.eqz (i32.load8_u offset=8 (local.get $in)))
          (then
            (global.set $now (i64.add (global.get $now) (i64.load offset=24 (local.get $in))))
            (br $done)))
        (local.set $in (i32.add (local.get $in) (i32.const 48)))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $next)))
    (i32.store (local.get $nevents) (i32.const 0))
    (i32.const 0))
)
