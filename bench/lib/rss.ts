/**
 * Memory of running processes: VmRSS sampled from /proc/PID/status every `everyMs`, keeping the
 * peak; VmHWM (the kernel's own peak RSS for the process's life) read on demand.
 */
import { readFileSync } from 'node:fs'

function field (pid: number, name: 'VmRSS' | 'VmHWM'): number | undefined {
  try {
    const m = new RegExp(`^${name}:\\s+(\\d+)\\s+kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
    return m === null ? undefined : Number(m[1]) * 1024
  } catch {
    return undefined
  }
}

export function vmHWM (pid: number | undefined): number | undefined {
  return pid === undefined ? undefined : field(pid, 'VmHWM')
}

export function vmRSS (pid: number | undefined): number | undefined {
  return pid === undefined ? undefined : field(pid, 'VmRSS')
}

export class RssSampler {
  private timer: NodeJS.Timeout | undefined
  readonly peak = new Map<string, number>()
  readonly samples = new Map<string, number>()
  private readonly pids: () => Record<string, number | undefined>

  /** `pids` is read at every tick, so an agent may be restarted between phases. */
  constructor (pids: () => Record<string, number | undefined>, private readonly everyMs = 100) {
    this.pids = pids
  }

  start (): this {
    this.tick()
    this.timer = setInterval(() => this.tick(), this.everyMs)
    return this
  }

  private tick (): void {
    for (const [name, pid] of Object.entries(this.pids())) {
      const rss = vmRSS(pid)
      if (rss === undefined) continue
      this.samples.set(name, (this.samples.get(name) ?? 0) + 1)
      if (rss > (this.peak.get(name) ?? 0)) this.peak.set(name, rss)
    }
  }

  stop (): Map<string, number> {
    if (this.timer !== undefined) clearInterval(this.timer)
    this.timer = undefined
    this.tick()
    return this.peak
  }
}

/** CPU time (user + system, all threads) a process has used so far, in seconds. */
export function cpuSeconds (pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // Fields after the command name (which may contain spaces) start after the last ')'.
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return (Number(f[11]) + Number(f[12])) / CLK_TCK
  } catch {
    return undefined
  }
}
/** USER_HZ: 100 on every Linux this runs on. */
const CLK_TCK = 100
