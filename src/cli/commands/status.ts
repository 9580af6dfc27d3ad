import type { Command } from 'commander'
import { formatHint, type Hint } from '../../core/hints.ts'
import { AgentClient } from '../../sdk/agent-client.ts'
import type { LockerStatus, TransferStatus } from '../../sdk/locker-client.ts'
import { explainLockerError, LOCKER_URL_HELP, type LockerRef, parseLockerUrl, TokenFiles } from '../lockers.ts'
import { action, agentUrl, formatBytes, printJson, printLines, type JsonOption, UsageError } from '../output.ts'

interface StatusOptions extends JsonOption { agent?: string, limit: string, locker?: string, token?: string, resource?: string }

interface AgentStatus {
  agent: { url: string, peer: string, hint: Hint }
  usage: { objects: number, chunks: number, bytes: number }
  transfers: Array<{ id: string, oid: string, size: number, fetched: number, sent: number, startedAt: number }>
}

/** What a locker server answers to Status_Query (the SDK's type plus what it adds). */
type FullLockerStatus = LockerStatus & {
  floor?: number
  apps?: Array<{ app: string, weight: number }>
  /** current bandwidth shares, bytes/s; null: nothing moving */
  bandwidth?: { egress: Share | null, ingress: Share | null }
  /** connection slots in use */
  slots?: number
  distributes?: TransferStatus[]
}
interface Share { rate: number, flows: number }

export function registerStatus (program: Command): void {
  program.command('status')
    .description('the agent\'s stored objects, usage and transfers in flight; with --locker, a locker\'s (DECADE Status_Query)')
    .option('--agent <url>', 'the agent\'s local API (default $BERTH_AGENT or http://127.0.0.1:4650)')
    .option('--locker <locker-url>', `a locker instead: ${LOCKER_URL_HELP}`)
    .option('--token <file>', 'with --locker: its access token (op "status"), as `berth token issue` prints it (- for stdin)')
    .option('--resource <file>', 'with --locker: its resource token, if not on the second line of --token FILE')
    .option('--limit <n>', 'list at most N objects', '20')
    .option('--json', 'print {agent, usage, transfers, objects} as JSON; with --locker {server, locker, quota, used, reserved, objects, apps, transfers, distributes, list}')
    .action(action(async (options: StatusOptions) => {
      const limit = Math.max(1, Math.min(100000, Number.parseInt(options.limit, 10) || 20))
      if (options.locker !== undefined) {
        if (options.agent !== undefined) throw new UsageError('give --agent or --locker, not both')
        await lockerStatus(parseLockerUrl(options.locker, '--locker'), options, limit)
        return
      }
      if (options.token !== undefined || options.resource !== undefined) throw new UsageError('--token and --resource go with --locker URL')
      const client = new AgentClient(agentUrl(options.agent))
      try {
        const [status, list] = await Promise.all([client.status() as Promise<AgentStatus>, client.list({ limit })])
        if (options.json === true) { printJson({ ...status, objects: list.objects }); return }
        const { agent, usage, transfers } = status
        const now = Date.now()
        const lines = [
          `agent      ${agent.url}`,
          `peer hint  ${formatHint(agent.hint)}`,
          `objects    ${usage.objects}`,
          `chunks     ${usage.chunks}`,
          `stored     ${formatBytes(usage.bytes)} (after dedup)`,
          `transfers  ${transfers.length} in flight`
        ]
        if (transfers.length > 0) {
          lines.push('', table(['OID', 'FETCHED', 'SIZE', 'SENT', 'AGE'], transfers.map(t => [
            t.oid, formatBytes(t.fetched), formatBytes(t.size), formatBytes(t.sent), `${Math.round((now - t.startedAt) / 1000)}s`
          ])))
        }
        if (list.objects.length > 0) {
          lines.push('', table(['OID', 'SIZE', 'CHUNKS', 'STORED AT'], list.objects.map(o => [
            o.oid, formatBytes(o.size), String(o.chunks), new Date(o.createdAt).toISOString()
          ])))
          if (usage.objects > list.objects.length) lines.push(`… and ${usage.objects - list.objects.length} more (--limit N)`)
        }
        printLines(...lines)
      } finally {
        await client.close()
      }
    }))
}

/** DECADE's Status_Query of one locker: usage against quota, transfers, distributes, objects. */
async function lockerStatus (locker: LockerRef, options: StatusOptions, limit: number): Promise<void> {
  if (options.token === undefined) throw new UsageError('--locker needs --token FILE (an access token with the "status" operation)')
  const auth = await new TokenFiles().tokens(options.token, '--token', options.resource)
  const { LockerClient } = await import('../../sdk/locker-client.ts')
  let s: FullLockerStatus
  try {
    s = await new LockerClient(locker.server).status(locker.name, auth) as FullLockerStatus
  } catch (err) {
    throw explainLockerError(err, locker.server)
  }
  const list = s.list.slice(0, limit)
  if (options.json === true) { printJson({ server: locker.server, ...s, list }); return }
  const distributes = s.distributes ?? []
  const apps = s.apps ?? []
  const now = Date.now()
  const age = (t: number): string => `${Math.round((now - t) / 1000)}s`
  const share = s.quota > 0 ? ` (${(100 * s.used / s.quota).toFixed(s.used / s.quota < 0.1 ? 2 : 1)}%)` : ''
  const lines = [
    `locker       ${s.locker} on ${locker.server}`,
    `weight       ${s.weight}${s.floor !== undefined && s.floor > 0 ? ` (guaranteed ${formatBytes(s.floor)}/s)` : ''}`,
    `objects      ${s.objects}`,
    `used         ${formatBytes(s.used)} of ${formatBytes(s.quota)}${share}`,
    `reserved     ${formatBytes(s.reserved)} (uploads and fetches under way)`,
    `transfers    ${s.transfers.length} in flight${s.slots !== undefined ? ` (${s.slots} connection slots)` : ''}`,
    `distributes  ${distributes.length} running`,
    `apps         ${apps.length > 0 ? apps.map(a => `${a.app} ${a.weight}`).join(', ') : 'default weights'}`
  ]
  if (s.bandwidth !== undefined) {
    const rate = (x: Share | null): string => x === null ? 'idle' : `${formatBytes(x.rate)}/s (${x.flows} flows)`
    lines.push(`bandwidth    out ${rate(s.bandwidth.egress)}, in ${rate(s.bandwidth.ingress)}`)
  }
  if (s.transfers.length > 0) {
    lines.push('', table(['OP', 'OID', 'APP', 'BYTES', 'AGE'], s.transfers.map(t => [t.op, t.oid, t.app, formatBytes(t.bytes), age(t.startedAt)])))
  }
  if (distributes.length > 0) {
    lines.push('', table(['DISTRIBUTE', 'OID', 'HOW', 'IN', 'OUT', 'SIZE', 'AGE'], distributes.map(t => [
      t.id, t.oid, t.how, formatBytes(t.bytesIn), formatBytes(t.bytesOut), t.size !== null ? formatBytes(t.size) : '?', age(t.startedAt)
    ])))
  }
  if (list.length > 0) {
    lines.push('', table(['OID', 'SIZE', 'SEQ', 'EXPIRES', 'STORED AT'], list.map(o => [
      o.oid, formatBytes(o.size), o.seq !== null ? String(o.seq) : '-', o.expiresAt !== null ? new Date(o.expiresAt).toISOString() : 'never', new Date(o.createdAt).toISOString()
    ])))
    if (s.objects > list.length) lines.push(`… and ${s.objects - list.length} more (--limit N)`)
  }
  printLines(...lines)
}

function table (head: string[], rows: string[][]): string {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map(r => r[i].length)))
  return [head, ...rows].map(r => r.map((c, i) => i === r.length - 1 ? c : c.padEnd(widths[i])).join('  ')).join('\n')
}
