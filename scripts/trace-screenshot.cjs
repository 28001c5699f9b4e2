// scripts/trace-screenshot.cjs VIEWER_DIR TRACE.json OUT.png [EXPECTED_THREADS]: the half of
// scripts/trace-screenshot that runs in Node (the bash half installs what it needs; run that one).
//
// Opens a Chrome trace-event JSON file in speedscope (from the npm package, in VIEWER_DIR/node_modules,
// served on 127.0.0.1 by this script) in headless Debian Chromium driven by playwright-core, through
// speedscope's own file input, and takes its "Time Order" flame chart of each thread. speedscope shows
// one thread at a time, so the PNG stacks them: each thread's chart, under a strip with the name
// speedscope gives it. speedscope starts each thread's time axis at that thread's first event; so that
// the threads line up, the copy it is given has two zero-length X events (nameless, too short to draw)
// on each thread, just before the start and just after the end of the whole trace. Nothing else is added to the trace.
// Fails when speedscope does not import the file, or when a thread's chart has nothing drawn in it.
// EXPECTED_THREADS: comma-separated words, each of which must be in one thread's name (the self-test).
'use strict';
const fs = require('fs');
const http = require('http');
const os = require('os');
const path = require('path');

const [viewerDir, tracePath, outPath, expected] = process.argv.slice(2);
if (!outPath) {
    console.error('usage: node scripts/trace-screenshot.cjs VIEWER_DIR TRACE.json OUT.png [EXPECTED_THREADS]');
    process.exit(2);
}
const { chromium } = require(path.join(viewerDir, 'node_modules', 'playwright-core'));
const speedscopeDir = path.join(viewerDir, 'node_modules', 'speedscope', 'dist', 'release');
const speedscopeVersion = require(path.join(viewerDir, 'node_modules', 'speedscope', 'package.json')).version;
const chromiumPath = process.env.CHROMIUM || '/usr/bin/chromium';
const width = Number(process.env.TRACE_SCREENSHOT_WIDTH || 1400);
const rowHeight = 20; // speedscope's flame chart: one row a frame, under an axis row of the same height

// die: before the browser starts; fail: after, so that the browser is closed on the way out.
function die(message) {
    console.error(`trace-screenshot: ${message}`);
    process.exit(1);
}
class Failure extends Error {}
function fail(message) {
    throw new Failure(message);
}

// The trace, its events, and the copy speedscope is given (the alignment events added).
let trace;
try {
    trace = JSON.parse(fs.readFileSync(tracePath, 'utf8'));
} catch (e) {
    die(`cannot read ${tracePath} as JSON: ${e.message}`);
}
const events = Array.isArray(trace) ? trace : trace.traceEvents;
if (!Array.isArray(events)) die(`${tracePath} has no traceEvents array`);
const timed = events.filter(e => ['B', 'E', 'X'].includes(e.ph) && typeof e.ts === 'number');
if (!timed.length) die(`${tracePath} has no B, E or X events`);
const start = Math.min(...timed.map(e => e.ts));
const end = Math.max(...timed.map(e => e.ts + (e.ph === 'X' ? e.dur || 0 : 0)));

// Per thread ("pid:tid"), the deepest nesting: the height its chart needs.
const depthOf = new Map();
{
    const steps = new Map();
    for (const e of timed) {
        const key = `${e.pid}:${e.tid}`;
        if (!steps.has(key)) steps.set(key, []);
        const list = steps.get(key);
        if (e.ph === 'B') list.push([e.ts, 1]);
        else if (e.ph === 'E') list.push([e.ts, -1]);
        else list.push([e.ts, 1], [e.ts + (e.dur || 0), -1]);
    }
    for (const [key, list] of steps) {
        list.sort((a, b) => a[0] - b[0] || a[1] - b[1]); // at the same time, ends before begins
        let depth = 0, deepest = 1;
        for (const [, step] of list) deepest = Math.max(deepest, (depth += step));
        depthOf.set(key, deepest);
    }
}
const deepest = Math.max(...depthOf.values());

// For the self-test: per thread, each name's total time in microseconds (B/E paired on a stack, X by
// its dur), to compare with the totals speedscope's "Sandwich" table gives. (A name nested in itself
// would count twice here and once there: the fixture has none.)
function totalsOf(key) {
    const totals = new Map(), open = [];
    const add = (name, us) => totals.set(name, (totals.get(name) || 0) + us);
    for (const e of timed.filter(e => `${e.pid}:${e.tid}` === key).sort((a, b) => a.ts - b.ts)) {
        if (e.ph === 'B') open.push(e);
        else if (e.ph === 'E') { const b = open.pop(); if (b) add(b.name, e.ts - b.ts); }
        else add(e.name, e.dur || 0);
    }
    return totals;
}

// The alignment events sit a hair outside the trace: speedscope pairs a begin and an end at the same
// time by name, so one at the very time another event begins would close the wrong one.
const hair = Math.max((end - start) * 1e-6, Math.abs(start) * 1e-12, 1e-6);
const aligned = events.slice();
for (const key of depthOf.keys()) {
    const [pid, tid] = key.split(':').map(Number);
    aligned.push({ name: '', ph: 'X', pid, tid, ts: start - hair, dur: 0 },
        { name: '', ph: 'X', pid, tid, ts: end + hair, dur: 0 });
}
const workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'trace-screenshot-'));
const alignedPath = path.join(workDir, path.basename(tracePath));
fs.writeFileSync(alignedPath, JSON.stringify(Array.isArray(trace) ? aligned : { ...trace, traceEvents: aligned }));

const types = { '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css', '.png': 'image/png',
    '.ico': 'image/x-icon', '.wasm': 'application/wasm', '.woff2': 'font/woff2', '.json': 'application/json' };
const server = http.createServer((request, response) => {
    let name = decodeURIComponent(new URL(request.url, 'http://localhost').pathname);
    if (name === '/') name = '/index.html';
    const file = path.join(speedscopeDir, path.normalize(name));
    if (!file.startsWith(speedscopeDir + path.sep) || !fs.existsSync(file) || !fs.statSync(file).isFile()) {
        response.writeHead(404);
        return response.end();
    }
    response.writeHead(200, { 'Content-Type': types[path.extname(file)] || 'application/octet-stream' });
    fs.createReadStream(file).pipe(response);
});

async function main() {
    const began = Date.now();
    await new Promise(resolve => server.listen(0, '127.0.0.1', resolve));
    const browser = await chromium.launch({
        executablePath: chromiumPath,
        // No background connections: this machine's network refuses them, many at a time.
        args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
            '--disable-component-update', '--disable-sync'],
    });
    const log = [];
    try {
        const viewportHeight = Math.max(400, 20 + 102 + rowHeight * (deepest + 1) + 40);
        const page = await browser.newPage({ viewport: { width, height: viewportHeight } });
        page.on('console', m => log.push(`console: ${m.text()}`));
        page.on('pageerror', e => log.push(`page error: ${e.message}`));
        page.on('dialog', d => { log.push(`dialog: ${d.message()}`); d.dismiss().catch(() => {}); });
        await page.goto(`http://127.0.0.1:${server.address().port}/`);
        await page.locator('input[type=file]').setInputFiles(alignedPath);

        // The title in the middle of speedscope's toolbar: "NAME (I/N)", or NAME alone for one thread.
        // The toolbar: the view buttons, the title (a text node, or a div for several threads), the others.
        const title = () => page.evaluate(() => {
            const bar = [...document.querySelectorAll('div')].reverse()
                .find(d => /Time Order/.test(d.innerText) && /Export/.test(d.innerText) && d.children.length >= 2);
            const text = !bar ? '' : [...bar.childNodes]
                .filter(n => n !== bar.firstElementChild && n !== bar.lastElementChild)
                .map(n => (n.nodeType === Node.TEXT_NODE ? n.textContent : n.innerText)).join('').trim();
            const chart = [...document.querySelectorAll('canvas')]
                .map(c => c.getBoundingClientRect()).sort((a, b) => b.top - a.top)[0];
            return { text, chartTop: chart && chart.top > 50 ? chart.top : null };
        });
        const settle = () => page.evaluate(() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r))));
        const waitFor = async (ok, what) => {
            for (let t = 0; t < 150; t++) {
                const now = await title();
                if (ok(now)) return now;
                await page.waitForTimeout(100);
            }
            fail(`speedscope did not ${what} in 15 s; what the page said:\n${log.join('\n') || '(nothing)'}`);
        };
        let shown = await waitFor(now => now.chartTop !== null && now.text !== '', 'show the trace');
        const count = Number((shown.text.match(/\((\d+)\/(\d+)\)$/) || [0, 1, 1])[2]);

        const threads = [];
        for (let i = 0; i < count; i++) {
            if (i > 0) {
                const before = shown.text;
                await page.keyboard.press('n'); // speedscope's key for the next profile (thread)
                shown = await waitFor(now => now.text !== before && now.chartTop !== null, `show thread ${i + 1}`);
            }
            await settle();
            await page.waitForTimeout(150);
            await settle();
            const name = shown.text.replace(/\s*\(\d+\/\d+\)$/, '');
            const ids = name.match(/\(pid (\d+)\).*\(tid (\d+)\)/);
            const depth = (ids && depthOf.get(`${ids[1]}:${ids[2]}`)) || deepest;
            const clip = { x: 0, y: shown.chartTop, width, height: rowHeight * (depth + 1) + 8 };
            threads.push({ name, png: await page.screenshot({ clip }) });
            if (expected && ids) await checkTotals(name, totalsOf(`${ids[1]}:${ids[2]}`));
        }

        // The self-test's check that speedscope read the thread as it is: each name's total time in its
        // Sandwich table is the trace's, and the alignment events take no time.
        async function checkTotals(thread, want) {
            await page.getByText('Sandwich').click();
            const rows = await page.waitForFunction(() => {
                const rows = [...document.querySelectorAll('table tr')].map(r => [...r.cells].map(c => c.innerText.trim()))
                    .filter(cells => cells.length === 3 && /^[\d.]+\s*(ns|µs|ms|s)\b/.test(cells[0])); // not the thread list's
                return rows.length ? rows : null;
            }, null, { timeout: 15000 }).then(h => h.jsonValue());
            await page.getByText('Time Order').click();
            await waitFor(now => now.chartTop !== null, 'go back to its Time Order view');
            const scale = { ns: 1e-3, 'µs': 1, ms: 1e3, s: 1e6 };
            const got = new Map(rows.map(([total, , name]) => {
                const m = total.match(/^([\d.]+)\s*(ns|µs|ms|s)\b/);
                return [name, m ? Number(m[1]) * scale[m[2]] : NaN];
            }));
            const near = (a, b) => Math.abs(a - b) <= Math.max(0.01 * b, 0.01);
            for (const [name, us] of want) {
                if (!near(got.get(name), us)) fail(`${thread}: speedscope has ${got.get(name)} µs for ${name}, the trace ${us}`);
            }
            for (const [name, us] of got) {
                if (!want.has(name) && us > 0.01) fail(`${thread}: speedscope has ${us} µs for ${name}, which is not in the trace`);
            }
        }

        // The threads, stacked, each under its name; a chart with nothing drawn under its axis fails.
        const composite = await browser.newPage({ viewport: { width, height: 10 } }); // fullPage: as tall as it is
        const escape = s => s.replace(/[&<>"]/g, c => `&#${c.charCodeAt(0)};`);
        await composite.setContent(`<!DOCTYPE html><html><body style="margin:0;background:#fff">
            ${threads.map((t, i) => `<div style="background:#000;color:#fff;font:12px monospace;padding:3px 6px">${escape(t.name)}</div>
            <img id="t${i}" style="display:block" src="data:image/png;base64,${t.png.toString('base64')}">`).join('\n')}
            </body></html>`);
        const drawn = await composite.evaluate(async (rows) => {
            const share = [];
            for (let i = 0; i < rows; i++) {
                const img = document.getElementById(`t${i}`);
                await img.decode();
                const canvas = document.createElement('canvas');
                canvas.width = img.naturalWidth;
                canvas.height = img.naturalHeight;
                const g = canvas.getContext('2d');
                g.drawImage(img, 0, 0);
                const below = Math.min(22, canvas.height - 1); // under the axis row
                const { data } = g.getImageData(0, below, canvas.width, canvas.height - below);
                let coloured = 0;
                for (let p = 0; p < data.length; p += 4) {
                    const [r, gr, b] = [data[p], data[p + 1], data[p + 2]];
                    if (Math.max(r, gr, b) - Math.min(r, gr, b) > 24) coloured++; // not white, grey or black
                }
                share.push(coloured / (data.length / 4));
            }
            return share;
        }, threads.length);
        await composite.screenshot({ path: outPath, fullPage: true });

        threads.forEach((t, i) => { if (drawn[i] < 0.005) fail(`${outPath}: nothing drawn in the chart of ${t.name}`); });
        if (expected) {
            for (const word of expected.split(',')) {
                if (!threads.some(t => t.name.includes(word))) {
                    fail(`no thread named with "${word}" among: ${threads.map(t => t.name).join('; ')}`);
                }
            }
        }
        const seconds = ((Date.now() - began) / 1000).toFixed(1);
        console.log(`trace-screenshot: ${outPath}: ${threads.length} thread(s) of ${tracePath} in speedscope ` +
            `${speedscopeVersion} (Chromium, headless), ${(end - start) / 1000} ms of trace, ${seconds} s`);
    } finally {
        await browser.close();
        server.close();
        fs.rmSync(workDir, { recursive: true, force: true });
    }
}

main().catch(e => {
    console.error(`trace-screenshot: ${e instanceof Failure ? e.message : e.stack || e}`);
    process.exitCode = 1;
});
