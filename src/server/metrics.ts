/**
 * Prometheus metrics of the media agent (text exposition format 0.0.4). Storage-wide
 * figures reveal what all tenants hold together, so `/metrics` needs an admin token.
 */

const BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

interface Histogram {
  counts: number[];
  sum: number;
  count: number;
}

export class Metrics {
  bytesIngested = 0;
  bytesStored = 0;
  bytesServed = 0;
  sessionsOpen = 0;
  readonly sessionsEnded = { committed: 0, aborted: 0, expired: 0 };
  private readonly requests = new Map<string, number>();
  private readonly latency = new Map<string, Histogram>();

  /** Records one finished request under its route template (never the raw URL). */
  observe(method: string, route: string, status: number, seconds: number): void {
    const key = `method="${method}",route="${route}",status="${status}"`;
    this.requests.set(key, (this.requests.get(key) ?? 0) + 1);
    const lkey = `method="${method}",route="${route}"`;
    let h = this.latency.get(lkey);
    if (!h) this.latency.set(lkey, (h = { counts: BUCKETS.map(() => 0), sum: 0, count: 0 }));
    BUCKETS.forEach((b, i) => {
      if (seconds <= b) h.counts[i]!++;
    });
    h.sum += seconds;
    h.count++;
  }

  render(): string {
    const lines: string[] = [];
    const metric = (name: string, type: string, help: string, values: [string, number][]) => {
      lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
      for (const [labels, v] of values) lines.push(`${name}${labels ? `{${labels}}` : ''} ${v}`);
    };
    metric('chunkvault_agent_bytes_ingested_total', 'counter', 'Raw disk bytes received in uploads.', [['', this.bytesIngested]]);
    metric('chunkvault_agent_bytes_stored_total', 'counter', 'Stored bytes (records) added by committed and aborted sessions.', [['', this.bytesStored]]);
    metric('chunkvault_agent_bytes_served_total', 'counter', 'Disk bytes sent in reads and streamed images.', [['', this.bytesServed]]);
    metric('chunkvault_agent_dedup_ratio', 'gauge', 'Raw bytes ingested per stored byte since start.', [['', this.bytesStored === 0 ? 0 : this.bytesIngested / this.bytesStored]]);
    metric('chunkvault_agent_sessions_open', 'gauge', 'Backup sessions open.', [['', this.sessionsOpen]]);
    metric('chunkvault_agent_sessions_total', 'counter', 'Backup sessions ended, by outcome.', Object.entries(this.sessionsEnded).map(([k, v]) => [`outcome="${k}"`, v]));
    metric('chunkvault_agent_requests_total', 'counter', 'HTTP requests by route and status.', [...this.requests]);
    lines.push('# HELP chunkvault_agent_request_duration_seconds HTTP request latency.', '# TYPE chunkvault_agent_request_duration_seconds histogram');
    for (const [labels, h] of this.latency) {
      BUCKETS.forEach((b, i) => lines.push(`chunkvault_agent_request_duration_seconds_bucket{${labels},le="${b}"} ${h.counts[i]}`));
      lines.push(`chunkvault_agent_request_duration_seconds_bucket{${labels},le="+Inf"} ${h.count}`);
      lines.push(`chunkvault_agent_request_duration_seconds_sum{${labels}} ${h.sum}`, `chunkvault_agent_request_duration_seconds_count{${labels}} ${h.count}`);
    }
    return lines.join('\n') + '\n';
  }
}
