/**
 * The jpar sidebar: every jpar cluster on this machine (and remote heads added by address), live.
 *
 *   Jupyter server extension (jpar.labserver)
 *     GET /jpar/stream   server-sent events: "clusters" (the list), "cluster" (one snapshot, <= 4 Hz)
 *     POST /jpar/start, /jpar/stop, /jpar/clusters      actions
 *       |  (fetch through ServerConnection: the server's own port and auth, so JupyterHub/Binder work)
 *     ClusterPanel (one Lumino widget in the left area) renders one card per cluster.
 *
 * No kernel is involved: the panel works with no notebook open and across kernel restarts.
 */
import { ILabShell, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { URLExt } from '@jupyterlab/coreutils';
import { INotebookTracker, NotebookActions } from '@jupyterlab/notebook';
import { ServerConnection } from '@jupyterlab/services';
import { LabIcon } from '@jupyterlab/ui-components';
import { Widget } from '@lumino/widgets';

import iconSvg from '../style/icon.svg';

export const jparIcon = new LabIcon({ name: 'jpar:clusters', svgstr: iconSvg });

const STATES = ['waiting', 'queued', 'assigned', 'running', 'done', 'failed', 'cancelled'];

interface IClusterSummary {
  id: string;
  address: string;
  pid: number;
  host: string;
  local: boolean;
  remote: boolean;
  file: string;
}

interface IEngine {
  id: number;
  node: string;
  pid: number;
  cpu: number;
  rss: number;
  queued: number;
  busy: boolean;
}

interface ISnapshot {
  address: string;
  id?: string;
  error?: string;
  engines?: IEngine[];
  tasks?: Record<string, number>;
  rate?: number;
  store?: { used: number; capacity: number; spilled: number; objects: number };
  actors?: { id: number; class: string; name: string; state: string }[];
  actor_counts?: Record<string, number>;
  drivers?: { no: number; pid: number; kind: string; host: string }[];
  memory_total?: number;
  uptime?: number;
}

function esc(s: unknown): string {
  return String(s ?? '').replace(/[&<>"']/g, c =>
    ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] as string
  );
}

function mib(n: number): string {
  return n >= 2 ** 30 ? `${(n / 2 ** 30).toFixed(1)} GiB` : `${(n / 2 ** 20).toFixed(0)} MiB`;
}

function bar(kind: string, frac: number, label: string): string {
  const pct = Math.max(0, Math.min(100, frac * 100));
  return (
    `<div class="jp-jpar-bar" data-kind="${kind}" data-value="${pct.toFixed(1)}" title="${esc(label)}">` +
    `<div class="jp-jpar-bar-fill" style="width:${pct.toFixed(1)}%"></div>` +
    `<span class="jp-jpar-bar-label">${esc(label)}</span></div>`
  );
}

/** The left-sidebar panel. */
export class ClusterPanel extends Widget {
  constructor(private tracker: INotebookTracker | null) {
    super();
    this.id = 'jpar-clusters';
    this.addClass('jp-jpar-panel');
    this.title.icon = jparIcon;
    this.title.caption = 'jpar clusters';
    this.node.innerHTML =
      '<div class="jp-jpar-header"><span class="jp-jpar-title">jpar clusters</span>' +
      '<span class="jp-jpar-conn" data-state="connecting">connecting</span></div>' +
      '<div class="jp-jpar-controls">' +
      '<label>engines <input class="jp-jpar-n" type="number" min="1" max="256" value="2"></label>' +
      '<button class="jp-jpar-button jp-mod-accept" data-action="start">Start cluster</button></div>' +
      '<div class="jp-jpar-controls">' +
      '<input class="jp-jpar-remote-address" placeholder="tcp://host:port">' +
      '<input class="jp-jpar-remote-key" placeholder="key (hex)">' +
      '<button class="jp-jpar-button" data-action="add-remote">Add</button></div>' +
      '<div class="jp-jpar-message"></div>' +
      '<div class="jp-jpar-clusters"><div class="jp-jpar-empty">No running jpar cluster.</div></div>';
    this.node.addEventListener('click', ev => this.onClick(ev));
  }

  private settings = ServerConnection.makeSettings();
  private clusters: IClusterSummary[] = [];
  private snapshots = new Map<string, ISnapshot>();
  private abort: AbortController | null = null;
  private retry = 500;

  // Stream only while the panel is shown: a collapsed sidebar costs the clusters nothing.
  protected onAfterShow(): void {
    void this.stream();
  }

  protected onAfterAttach(): void {
    if (this.isVisible) {
      void this.stream();
    }
  }

  protected onBeforeHide(): void {
    this.abort?.abort();
    this.abort = null;
  }

  protected onBeforeDetach(): void {
    this.onBeforeHide();
  }

  dispose(): void {
    this.abort?.abort();
    super.dispose();
  }

  private url(path: string): string {
    return URLExt.join(this.settings.baseUrl, 'jpar', path);
  }

  async request(path: string, method = 'GET', body?: unknown): Promise<any> {
    const init: RequestInit = { method };
    if (body !== undefined) {
      init.body = JSON.stringify(body);
    }
    const resp = await ServerConnection.makeRequest(this.url(path), init, this.settings);
    const text = await resp.text();
    let data: any = {};
    try {
      data = text ? JSON.parse(text) : {};
    } catch {
      data = { message: text };
    }
    if (!resp.ok) {
      throw new Error(data.message || data.reason || `${method} /jpar/${path}: ${resp.status}`);
    }
    return data;
  }

  /** Read the server-sent events of /jpar/stream through fetch (so the server's auth headers apply). */
  private async stream(): Promise<void> {
    if (this.abort) {
      return;
    }
    const abort = (this.abort = new AbortController());
    const setConn = (state: string) => {
      const el = this.node.querySelector('.jp-jpar-conn') as HTMLElement;
      el.dataset.state = state;
      el.textContent = state;
    };
    while (!abort.signal.aborted && !this.isDisposed) {
      try {
        const resp = await ServerConnection.makeRequest(
          this.url('stream'),
          { signal: abort.signal, headers: { Accept: 'text/event-stream' } },
          this.settings
        );
        if (!resp.ok || !resp.body) {
          throw new Error(`stream: ${resp.status}`);
        }
        setConn('live');
        this.retry = 500;
        const reader = resp.body.getReader();
        const decoder = new TextDecoder();
        let buf = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) {
            break;
          }
          buf += decoder.decode(value, { stream: true });
          let cut: number;
          while ((cut = buf.indexOf('\n\n')) >= 0) {
            this.onEvent(buf.slice(0, cut));
            buf = buf.slice(cut + 2);
          }
        }
      } catch (err) {
        if (abort.signal.aborted) {
          return;
        }
      }
      setConn('reconnecting');
      await new Promise(r => setTimeout(r, this.retry));
      this.retry = Math.min(this.retry * 2, 10000);
    }
  }

  private onEvent(block: string): void {
    let kind = 'message';
    const data: string[] = [];
    for (const line of block.split('\n')) {
      if (line.startsWith('event:')) {
        kind = line.slice(6).trim();
      } else if (line.startsWith('data:')) {
        data.push(line.slice(5).trim());
      }
    }
    if (!data.length) {
      return;
    }
    const payload = JSON.parse(data.join('\n'));
    if (kind === 'clusters') {
      this.clusters = payload.clusters;
      const live = new Set(this.clusters.map(c => c.address));
      for (const a of Array.from(this.snapshots.keys())) {
        if (!live.has(a)) {
          this.snapshots.delete(a);
        }
      }
      this.renderList();
    } else if (kind === 'cluster') {
      this.snapshots.set(payload.address, payload);
      this.renderCluster(payload.address);
    }
  }

  private cardOf(address: string): HTMLElement | null {
    for (const el of Array.from(this.node.querySelectorAll('.jp-jpar-cluster'))) {
      if ((el as HTMLElement).dataset.address === address) {
        return el as HTMLElement;
      }
    }
    return null;
  }

  private renderList(): void {
    const list = this.node.querySelector('.jp-jpar-clusters') as HTMLElement;
    const keep = new Set(this.clusters.map(c => c.address));
    for (const el of Array.from(list.querySelectorAll('.jp-jpar-cluster'))) {
      if (!keep.has((el as HTMLElement).dataset.address || '')) {
        el.remove();
      }
    }
    for (const c of this.clusters) {
      if (!this.cardOf(c.address)) {
        const card = document.createElement('div');
        card.className = 'jp-jpar-cluster';
        card.dataset.address = c.address;
        card.dataset.clusterId = c.id;
        card.innerHTML =
          `<div class="jp-jpar-cluster-head"><span class="jp-jpar-cluster-name" title="${esc(c.address)}">` +
          `${esc(c.remote ? 'remote' : 'cluster')} ${esc(c.id)}</span>` +
          `<span class="jp-jpar-cluster-address">${esc(c.address)}</span></div>` +
          '<div class="jp-jpar-actions">' +
          '<button class="jp-jpar-button" data-action="insert" title="Insert jpar.init(address=...) into the active notebook">init</button>' +
          '<button class="jp-jpar-button" data-action="dashboard" title="Open the dashboard in the active notebook">dashboard</button>' +
          (c.file
            ? '<button class="jp-jpar-button" data-action="add-engine" title="Start one more engine on this machine">+1 engine</button>'
            : '') +
          '<button class="jp-jpar-button jp-mod-warn" data-action="stop" title="Stop this cluster and all its processes">stop</button>' +
          '</div><div class="jp-jpar-body"><div class="jp-jpar-empty">connecting…</div></div>';
        list.appendChild(card);
      }
      this.renderCluster(c.address);
    }
    const empty = list.querySelector(':scope > .jp-jpar-empty') as HTMLElement | null;
    if (this.clusters.length && empty) {
      empty.remove();
    } else if (!this.clusters.length && !empty) {
      list.innerHTML = '<div class="jp-jpar-empty">No running jpar cluster.</div>';
    }
  }

  private renderCluster(address: string): void {
    const card = this.cardOf(address);
    const s = this.snapshots.get(address);
    if (!card || !s) {
      return;
    }
    const body = card.querySelector('.jp-jpar-body') as HTMLElement;
    if (s.error) {
      body.innerHTML = `<div class="jp-jpar-error">${esc(s.error)}</div>`;
      return;
    }
    const engines = s.engines || [];
    const memShare = (s.memory_total || 1) / Math.max(1, engines.length);
    const tasks = s.tasks || {};
    const store = s.store || { used: 0, capacity: 0, spilled: 0, objects: 0 };
    const rows = engines
      .map(
        e =>
          `<div class="jp-jpar-engine" data-engine-id="${e.id}" data-busy="${e.busy}">` +
          `<span class="jp-jpar-engine-id" title="pid ${e.pid} on ${esc(e.node)}">${e.id}</span>` +
          bar('cpu', e.cpu / 100, `${e.cpu.toFixed(0)}% CPU`) +
          bar('mem', e.rss / memShare, mib(e.rss)) +
          `</div>`
      )
      .join('');
    const chips = STATES.map(
      st => `<span class="jp-jpar-chip" data-state="${st}" data-count="${tasks[st] || 0}">${st} ${tasks[st] || 0}</span>`
    ).join('');
    const actors = (s.actors || [])
      .map(
        a =>
          `<li class="jp-jpar-actor" data-state="${esc(a.state)}">${esc(a.class)}${a.name ? ` "${esc(a.name)}"` : ''}` +
          ` <span class="jp-jpar-dim">${esc(a.state)}</span></li>`
      )
      .join('');
    const drivers = (s.drivers || [])
      .map(d => `<li class="jp-jpar-driver">${esc(d.kind)} pid ${d.pid} on ${esc(d.host)}</li>`)
      .join('');
    body.innerHTML =
      `<div class="jp-jpar-section">Engines <span class="jp-jpar-dim">(${engines.length})</span></div>` +
      `<div class="jp-jpar-engines">${rows || '<div class="jp-jpar-empty">no engines</div>'}</div>` +
      `<div class="jp-jpar-section">Tasks <span class="jp-jpar-rate" data-rate="${s.rate || 0}">${(s.rate || 0).toFixed(1)} tasks/s</span></div>` +
      `<div class="jp-jpar-chips">${chips}</div>` +
      `<div class="jp-jpar-section">Object store <span class="jp-jpar-dim">${store.objects} objects` +
      `${store.spilled ? `, ${mib(store.spilled)} spilled` : ''}</span></div>` +
      bar('store', store.capacity ? store.used / store.capacity : 0, `${mib(store.used)} / ${mib(store.capacity)}`) +
      `<div class="jp-jpar-section">Actors <span class="jp-jpar-dim">(${(s.actors || []).length})</span></div>` +
      `<ul class="jp-jpar-list jp-jpar-actors">${actors || '<li class="jp-jpar-dim">none</li>'}</ul>` +
      `<div class="jp-jpar-section">Drivers <span class="jp-jpar-dim">(${(s.drivers || []).length})</span></div>` +
      `<ul class="jp-jpar-list jp-jpar-drivers">${drivers || '<li class="jp-jpar-dim">none attached</li>'}</ul>`;
  }

  private message(text: string, error = false): void {
    const el = this.node.querySelector('.jp-jpar-message') as HTMLElement;
    el.textContent = text;
    el.dataset.error = String(error);
  }

  private async onClick(ev: MouseEvent): Promise<void> {
    const button = (ev.target as HTMLElement).closest('[data-action]') as HTMLButtonElement | null;
    if (!button) {
      return;
    }
    const action = button.dataset.action;
    const card = button.closest('.jp-jpar-cluster') as HTMLElement | null;
    const address = card?.dataset.address || '';
    button.disabled = true;
    try {
      if (action === 'start') {
        const n = parseInt((this.node.querySelector('.jp-jpar-n') as HTMLInputElement).value, 10) || 1;
        this.message(`starting a cluster with ${n} engine(s)…`);
        const r = await this.request('start', 'POST', { engines: n });
        this.message(`started ${r.address} (head pid ${r.pid})`);
      } else if (action === 'stop') {
        this.message(`stopping ${address}…`);
        await this.request('stop', 'POST', { address });
        this.message(`stopped ${address}`);
      } else if (action === 'add-engine') {
        const r = await this.request('engines', 'POST', { address, engines: 1 });
        this.message(`engine started (pid ${r.pids.join(', ')})`);
      } else if (action === 'add-remote') {
        const a = (this.node.querySelector('.jp-jpar-remote-address') as HTMLInputElement).value.trim();
        const k = (this.node.querySelector('.jp-jpar-remote-key') as HTMLInputElement).value.trim();
        await this.request('clusters', 'POST', { address: a, key: k });
        this.message(`added ${a}`);
      } else if (action === 'insert') {
        this.insert(`import jpar\njpar.init(address=${JSON.stringify(address)})`, false);
      } else if (action === 'dashboard') {
        this.insert(`import jpar\njpar.init(address=${JSON.stringify(address)})\njpar.dashboard()`, true);
      }
    } catch (err) {
      this.message(String((err as Error).message || err), true);
    } finally {
      button.disabled = false;
    }
  }

  /** Insert a code cell below the active one of the current notebook (and run it). */
  private insert(code: string, run: boolean): void {
    const panel = this.tracker?.currentWidget;
    if (!panel) {
      this.message('Open a notebook first: the code goes into the active notebook.', true);
      return;
    }
    const nb = panel.content;
    NotebookActions.insertBelow(nb);
    const cell = nb.activeCell;
    if (cell) {
      cell.model.sharedModel.setSource(code);
    }
    if (run) {
      void NotebookActions.run(nb, panel.sessionContext);
    }
    this.message(run ? 'dashboard cell inserted and run' : 'jpar.init cell inserted');
  }
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'jpar:sidebar',
  description: 'The live jpar clusters in the left sidebar.',
  autoStart: true,
  requires: [ILabShell],
  optional: [INotebookTracker],
  activate: (app: JupyterFrontEnd, shell: ILabShell, tracker: INotebookTracker | null) => {
    const panel = new ClusterPanel(tracker);
    shell.add(panel, 'left', { rank: 600 });
    app.commands.addCommand('jpar:open-sidebar', {
      label: 'Show the jpar clusters',
      execute: () => shell.activateById(panel.id)
    });
  }
};

export default plugin;
