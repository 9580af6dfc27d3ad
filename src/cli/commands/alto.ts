/**
 * `berth alto serve`: the ALTO server (RFC 7285) over a topology file. SIGHUP reads the file
 * again; a file that no longer validates is reported and the map being served stays.
 */
import { resolve } from 'node:path'
import type { Command } from 'commander'
import { toBerthError } from '../../core/errors.ts'
import { type Part, stopOnSignal, startParts } from '../daemon.ts'
import { action, printJson, printLines, type JsonOption } from '../output.ts'

interface ServeOptions extends JsonOption { listen: string, topology: string }

export function registerAlto (program: Command): void {
  const alto = program.command('alto').description('the ALTO proximity service (RFC 7285): which endpoints are near which')

  alto.command('serve')
    .description('run an ALTO server over a topology file (PIDs with address blocks, links with costs); SIGHUP reloads the file')
    .requiredOption('--topology <file>', 'topology JSON: {"pids": {"NAME": ["CIDR", …]}, "links": [{"from", "to", "cost"}]}')
    .option('--listen <addr>', 'HTTP address, HOST:PORT (port 0: any free port)', '127.0.0.1:4670')
    .option('--json', 'print {url, directory, vtag, topology} as one JSON line once listening')
    .action(action(async (options: ServeOptions) => {
      const signals = stopOnSignal(options.json === true)
      const file = resolve(options.topology)
      const { createAltoServer } = await import('../../overlay/alto/server.ts')
      const server = await createAltoServer({ listen: options.listen, topologyFile: file })
      const parts: Part[] = [{ name: 'ALTO server', start: async () => await server.start(), stop: async () => await server.stop() }]
      await startParts(parts)
      process.on('SIGHUP', () => {
        server.reload().then(
          t => { process.stderr.write(`berth: topology reloaded from ${file} (vtag ${t.vtag})\n`) },
          (err: unknown) => { const e = toBerthError(err); process.stderr.write(`berth: ${e.code}: ${e.message} (still serving vtag ${server.topology.vtag})\n`) }
        )
      })
      const t = server.topology
      if (options.json === true) printJson({ url: server.url, directory: `${server.url}/`, vtag: t.vtag, topology: file })
      else {
        printLines(
          'berth ALTO server running',
          `  directory  ${server.url}/`,
          `  topology   ${file} (${t.pids.length} PIDs, ${t.links.length} links; vtag ${t.vtag.slice(0, 16)}…)`,
          `  reload     kill -HUP ${process.pid}`
        )
      }
      await signals.serve(parts)
    }))
}
