/** An agent in its own process (for kill -9 tests): prints {url, peerUrl, hint} as one JSON line. */
import { createAgent } from '../../src/agent/agent.ts'

const [storeDir, listen = '127.0.0.1:0', peerListen = '127.0.0.1:0'] = process.argv.slice(2)
const agent = await createAgent({ storeDir, listen, peerListen })
await agent.start()
process.stdout.write(JSON.stringify({ url: agent.url, peerUrl: agent.peerUrl, hint: agent.selfHint.uri, pid: process.pid }) + '\n')
const stop = async (): Promise<void> => { await agent.stop(); process.exit(0) }
process.on('SIGTERM', () => { void stop() })
process.on('SIGINT', () => { void stop() })
