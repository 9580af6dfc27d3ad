import type { Command } from 'commander'
import { formatHint, type Hint } from '../../core/hints.ts'
import { AgentClient } from '../../sdk/agent-client.ts'
import { action, agentUrl, formatBytes, printJson, printLines, type JsonOption } from '../output.ts'

interface StatusOptions extends JsonOption { agent?: string, limit: string }

interface AgentStatus {
  agent: { url: string, peer: string, hint: Hint }
  usage: { objects: number, chunks: number, bytes: number }
  transfers: Array<{ id: string, oid: string, size: number, fetched: number, sent: number, startedAt: number }>
}

export function registerStatus (program: Command): void {
  program.command('status')
    .description('the agent\'s stored objects, usage and transfers in flight')
    .option('--agent <url>', 'the agent\'s local API (default $BERTH_AGENT or http://127.0.0.1:4650)')
    .option('--limit <n>', 'list at most N objects', '20')
    .option('--json', 'print {agent, usage, transfers, objects} as JSON')
    .action(action(async (options: StatusOptions) => {
      const limit = Math.max(1, Math.min(100000, Number.parseInt(options.limit, 10) || 20))
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

function table (head: string[], rows: string[][]): string {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map(r => r[i].length)))
  return [head, ...rows].map(r => r.map((c, i) => i === r.length - 1 ? c : c.padEnd(widths[i])).join('  ')).join('\n')
}
