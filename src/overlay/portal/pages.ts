/** The portal's two web pages: plain HTML with a little inline script, no build step. */

const STYLE = `body{font:16px/1.5 system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem;color:#222}
h1{font-size:1.5rem}code{word-break:break-all;background:#f3f3f3;padding:0 .2em}
.box{border:1px solid #ccc;border-radius:6px;padding:1rem;margin:1rem 0}
button,a.button{font:inherit;padding:.4rem 1rem;border:1px solid #246;border-radius:4px;background:#358;color:#fff;text-decoration:none;display:inline-block}
#status.error{color:#a00}`

function escape (s: string): string {
  return s.replace(/[&<>"']/g, c => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!)
}

export function uploadPage (): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>Berth portal — publish a file</title><style>${STYLE}</style></head>
<body>
<h1>Publish a file</h1>
<p>The file is stored in several lockers; each downloader is sent to the one nearest to them.</p>
<form id="upload" class="box">
  <p><input type="file" id="file" name="file" required></p>
  <p><button type="submit" id="send">Upload</button></p>
</form>
<p id="status" role="status"></p>
<div id="result" class="box" hidden>
  <p>Download URL: <a id="url" href="#"></a></p>
  <p>Download page: <a id="page" href="#"></a></p>
  <p>Object: <code id="oid"></code> (<span id="size"></span> bytes)</p>
  <p>Replicas: <span id="replicas"></span></p>
</div>
<script>
const form = document.getElementById('upload')
const status = document.getElementById('status')
form.addEventListener('submit', async (event) => {
  event.preventDefault()
  const file = document.getElementById('file').files[0]
  if (!file) return
  status.className = ''
  status.textContent = 'Uploading ' + file.name + '…'
  document.getElementById('send').disabled = true
  try {
    const response = await fetch('/v1/objects?name=' + encodeURIComponent(file.name), { method: 'POST', body: file, headers: { 'content-type': 'application/octet-stream' } })
    const answer = await response.json()
    if (!response.ok) throw new Error(answer.error ? answer.error.message : response.statusText)
    for (const [id, value] of [['url', answer.url], ['page', answer.page]]) {
      const a = document.getElementById(id); a.href = value; a.textContent = value
    }
    document.getElementById('oid').textContent = answer.oid
    document.getElementById('size').textContent = String(answer.size)
    document.getElementById('replicas').textContent = answer.replicas.map(r => r.name).join(', ')
    document.getElementById('result').hidden = false
    status.textContent = 'Published.'
  } catch (err) {
    status.className = 'error'
    status.textContent = 'Upload failed: ' + err.message
  } finally {
    document.getElementById('send').disabled = false
  }
})
</script>
</body></html>
`
}

export function downloadPage (o: { oid: string, name?: string, size?: number, download: string }): string {
  const title = o.name ?? o.oid
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>Berth portal — ${escape(title)}</title><style>${STYLE}</style></head>
<body>
<h1>Download ${escape(title)}</h1>
<div class="box">
  <p>Object: <code id="oid">${escape(o.oid)}</code>${o.size !== undefined ? ` (<span id="size">${o.size}</span> bytes)` : ''}</p>
  <p><a class="button" id="download" href="${escape(o.download)}">Download</a></p>
  <p id="where">Finding the nearest locker…</p>
</div>
<p>The download comes from the locker nearest to you; its bytes hash to the name above.</p>
<script>
fetch('/v1/objects/' + ${JSON.stringify(o.oid)} + '/where').then(r => r.json()).then(w => {
  document.getElementById('where').textContent = w.error ? 'No locker can serve it now: ' + w.error.message : 'Nearest locker: ' + w.name
}, () => { document.getElementById('where').textContent = '' })
</script>
</body></html>
`
}
