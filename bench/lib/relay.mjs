/**
 * A loopback TCP relay to 127.0.0.1:`target` whose route can die: after `stop()` it reads
 * and drops everything both ways and ignores FIN and resets, so each end sees exactly a
 * route that silently stopped carrying packets (a phone asleep, a NAT that forgot the flow).
 */
import net from 'node:net'
import { HOST } from './common.mjs'

export async function startRelay(target) {
  const sockets = new Set()
  let forwarding = true
  const track = (s) => {
    sockets.add(s)
    s.on('error', () => {})
    s.once('close', () => sockets.delete(s))
  }
  const server = net.createServer({ allowHalfOpen: true }, (down) => {
    track(down)
    const up = net.connect({ host: HOST, port: target, allowHalfOpen: true })
    track(up)
    const pending = []
    let ready = false
    up.once('connect', () => {
      ready = true
      for (const chunk of pending.splice(0)) up.write(chunk)
    })
    down.on('data', (chunk) => {
      if (!forwarding) return
      if (ready) up.write(chunk)
      else pending.push(chunk)
    })
    up.on('data', (chunk) => forwarding && down.write(chunk))
    down.on('end', () => forwarding && up.end())
    up.on('end', () => forwarding && down.end())
    down.on('close', () => forwarding && up.destroy())
    up.on('close', () => forwarding && down.destroy())
  })
  await new Promise((resolve) => server.listen(0, HOST, resolve))
  return {
    port: server.address().port,
    stop() {
      forwarding = false
    },
    close() {
      for (const s of sockets) s.destroy()
      server.close()
    },
  }
}
