import { Counter, Histogram, Registry } from 'prom-client';

/**
 * The cache's Prometheus metrics, in a registry of their own that the node agent can merge into
 * its /metrics (`Registry.merge([agentRegistry, cache.metrics.registry])`) or serve as it is.
 */
export class CacheMetrics {
  readonly hits: Counter;
  readonly misses: Counter;
  readonly remoteHits: Counter;
  readonly installs: Counter;
  readonly bytes: Counter<'direction'>;
  readonly installSeconds: Histogram;
  readonly fetchSeconds: Histogram;
  readonly evictions: Counter;

  constructor(readonly registry: Registry = new Registry()) {
    const registers = [registry];
    const buckets = [0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600];
    this.hits = new Counter({ name: 'buildfleet_cache_hits_total', help: 'gets answered from the local store', registers });
    this.misses = new Counter({ name: 'buildfleet_cache_misses_total', help: 'gets the local store could not answer (a corrupt entry counts)', registers });
    this.remoteHits = new Counter({ name: 'buildfleet_cache_remote_hits_total', help: 'misses answered by the registry', registers });
    this.installs = new Counter({ name: 'buildfleet_cache_installs_total', help: 'misses answered by running the installer', registers });
    this.bytes = new Counter({ name: 'buildfleet_cache_bytes_total', help: 'compressed toolchain bytes moved to or from the registry', labelNames: ['direction'] as const, registers });
    this.installSeconds = new Histogram({ name: 'buildfleet_cache_install_duration_seconds', help: 'installer run, pack and push', buckets, registers });
    this.fetchSeconds = new Histogram({ name: 'buildfleet_cache_fetch_duration_seconds', help: 'download, verify and extract of an entry', buckets, registers });
    this.evictions = new Counter({ name: 'buildfleet_cache_evictions_total', help: 'entries removed by gc', registers });
  }
}
