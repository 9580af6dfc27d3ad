/** The agent's Prometheus metrics, on its own registry so several agents can share a process. */
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client'

export interface AgentMetrics {
  registry: Registry
  bytesReceived: Counter<'plugin'>
  bytesServed: Counter<'api'>
  chunksVerified: Counter<'plugin'>
  chunksRejected: Counter<'plugin'>
  transfersInFlight: Gauge
  objectsCompleted: Counter
  objectsPut: Counter
  bytesPut: Counter
}

export function createAgentMetrics (options: { processMetrics?: boolean } = {}): AgentMetrics {
  const registry = new Registry()
  if (options.processMetrics === true) collectDefaultMetrics({ register: registry, prefix: 'berth_agent_' })
  const registers = [registry]
  return {
    registry,
    bytesReceived: new Counter({ name: 'berth_agent_bytes_received_total', help: 'verified chunk bytes received, by transfer plugin', labelNames: ['plugin'], registers }),
    bytesServed: new Counter({ name: 'berth_agent_bytes_served_total', help: 'bytes sent, by API (local or peer)', labelNames: ['api'], registers }),
    chunksVerified: new Counter({ name: 'berth_agent_chunks_verified_total', help: 'chunks that hashed to their cid, by plugin', labelNames: ['plugin'], registers }),
    chunksRejected: new Counter({ name: 'berth_agent_chunks_rejected_total', help: 'chunks whose bytes did not hash to their cid, by plugin', labelNames: ['plugin'], registers }),
    transfersInFlight: new Gauge({ name: 'berth_agent_transfers_in_flight', help: 'gets under way', registers }),
    objectsCompleted: new Counter({ name: 'berth_agent_objects_fetched_total', help: 'objects fetched and verified against their OID', registers }),
    objectsPut: new Counter({ name: 'berth_agent_objects_put_total', help: 'objects put', registers }),
    bytesPut: new Counter({ name: 'berth_agent_bytes_put_total', help: 'bytes put', registers })
  }
}
