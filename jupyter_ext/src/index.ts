/**
 * The jpar sidebar: every jpar cluster on this machine (and remote heads added by address), live.
 *
 *   Jupyter server extension (jpar.labserver)
 *     GET /jpar/stream   server-sent events: "clusters" (the list), "cluster" (one snapshot, <= 4 Hz)
 *     POST /jpar/start, /jpar/stop, /jpar/clusters      actions
 *       |  (fetch through ServerConnection: the server's own port and auth, so JupyterHub/Binder work)
 *     ClusterPanel (one Lumino widget in the left area) renders one card per cluster.
 *
 * Native clusters' data never involves a kernel: the panel works with no notebook open and across kernel
 * restarts. What only the active notebook's kernel knows (its pending tasks per cell) the kernel pushes
 * over a comm (KernelLink) opened while it is idle; the sidebar never sends it a request while a cell
 * runs (the kernel's status messages would flip the status bar to Idle), and cancels a cell's tasks
 * through the server with the ids the kernel pushed.
 *
 * A Dask or Ray cluster the server cannot find or watch: the kernel that drives it pushes its card
 * over the same comm (same snapshot shape, plus its backend's capability flags), and the panel shows
 * it beside the server's clusters; buttons its backend lacks are disabled, their tooltip says why.
 * The server cannot cancel on those clusters either: the sidebar asks the kernel, only while it is idle.
 */
import { ILabShell, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { Dialog, showDialog } from '@jupyterlab/apputils';
import { URLExt } from '@jupyterlab/coreutils';
import { INotebookTracker, NotebookActions } from '@jupyterlab/notebook';
import { Kernel, ServerConnection, Session } from '@jupyterlab/services';
import { LabIcon } from '@jupyterlab/ui-components';
import { Widget } from '@lumino/widgets';

import iconSvg from '../style/icon.svg';
import { actionButtons, cardBody, esc, initCall, IClusterSummary, ISnapshot } from './card';
import { INotebookInfo, KernelLink } from './kernellink';

export const jparIcon = new LabIcon({ name: 'jpar:clusters', svgstr: iconSvg });

/** The left-sidebar panel. */
export class ClusterPanel extends Widget {
  constructor(
    private tracker: INotebookTracker | null,
    private sessions: Session.IManager | null = null
  ) {
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
      '<div class="jp-jpar-notebook" data-attached="false"></div>' +
      '<div class="jp-jpar-clusters"><div class="jp-jpar-empty">No running jpar cluster.</div></div>';
    this.node.addEventListener('click', ev => this.onClick(ev));
    this.tracker?.currentChanged.connect(() => this.notebookChanged());
    NotebookActions.executed.connect(() => {
      this.openWanted = true; // a cell ran: maybe `import jpar` now
    });
    this.sessions?.runningChanged.connect(() => this.updateSessions());
    this.updateSessions();
  }

  private settings = ServerConnection.makeSettings();
  private clusters: IClusterSummary[] = []; // the server's (native)
  private kernelCards = new Map<string, ISnapshot>(); // kernel id -> the Dask/Ray card it pushes
  private snapshots = new Map<string, ISnapshot>();
  private abort: AbortController | null = null;
  private retry = 500;

  // Stream only while the panel is shown: a collapsed sidebar costs the clusters nothing.
  protected onAfterShow(): void {
    this.openWanted = true;
    void this.stream();
    this.startNotebookTimer();
  }

  protected onAfterAttach(): void {
    if (this.isVisible) {
      void this.stream();
      this.startNotebookTimer();
    }
  }

  protected onBeforeHide(): void {
    this.abort?.abort();
    this.abort = null;
    window.clearInterval(this.nbTimer);
    this.nbTimer = 0;
  }

  protected onBeforeDetach(): void {
    this.onBeforeHide();
  }

  dispose(): void {
    this.abort?.abort();
    window.clearInterval(this.nbTimer);
    for (const link of this.links.values()) {
      link.dispose();
    }
    super.dispose();
  }

  // ------------------------------------------------------------------ this notebook (kernel comm)
  private links = new Map<string, KernelLink>(); // kernel id -> its comm
  private nbInfo: INotebookInfo | null = null;
  private nbTimer = 0;
  private nbBusy = false;
  private openWanted = true; // try (re)opening the comm at the next tick the kernel is idle
  private kernelPaths = new Map<string, string>(); // kernel id -> notebook path

  private updateSessions(): void {
    if (!this.sessions) {
      return;
    }
    this.kernelPaths.clear();
    for (const s of this.sessions.running()) {
      if (s.kernel) {
        this.kernelPaths.set(s.kernel.id, s.path);
      }
    }
    for (const a of this.snapshots.keys()) {
      this.renderCluster(a);
    }
  }

  private startNotebookTimer(): void {
    if (!this.nbTimer) {
      this.nbTimer = window.setInterval(() => void this.refreshNotebook(), 1000);
      void this.refreshNotebook();
    }
  }

  private notebookChanged(): void {
    this.openWanted = true;
    this.nbInfo = null;
    const panel = this.tracker?.currentWidget;
    if (panel && !(panel as any).__jparWatched) {
      (panel as any).__jparWatched = true;
      panel.sessionContext.kernelChanged.connect(() => {
        this.openWanted = true;
        void this.refreshNotebook();
      });
      panel.sessionContext.statusChanged.connect((_, status) => {
        if (status === 'restarting' || status === 'autorestarting' || status === 'dead') {
          this.openWanted = true;
          this.nbInfo = null; // its driver is gone with it
          this.renderNotebook();
        }
      });
    }
    this.renderNotebook();
    void this.refreshNotebook();
  }

  private currentKernel(): Kernel.IKernelConnection | null {
    return this.tracker?.currentWidget?.sessionContext.session?.kernel ?? null;
  }

  private linkFor(kernel: Kernel.IKernelConnection): KernelLink {
    let link = this.links.get(kernel.id);
    if (!link || link.kernel !== kernel) {
      link?.dispose();
      const fresh = new KernelLink(kernel, l => this.onPush(l));
      this.links.set(kernel.id, fresh);
      kernel.disposed.connect(() => {
        fresh.dispose();
        if (this.links.get(kernel.id) === fresh) {
          this.links.delete(kernel.id);
        }
      });
      link = fresh;
    }
    return link;
  }

  /**
   * The kernel pushed new figures (or closed the comm): show them if it is the active notebook's; a
   * cluster card it pushes (Dask, Ray) shows whichever notebook is active, while its comm is open.
   */
  private onPush(link: KernelLink): void {
    if (this.isDisposed) {
      return;
    }
    const id = link.kernel.id;
    const card = link.cluster as ISnapshot | null;
    const before = this.kernelCards.get(id);
    if (card && card.address) {
      // its driver is this kernel: named by its notebook, as the server's cards name kernels
      const drivers = (card.drivers || []).map(d => ({ ...d, kernel_id: id }));
      this.kernelCards.set(id, { ...card, drivers, kernel_id: id });
      this.snapshots.set(card.address, this.kernelCards.get(id)!);
    } else {
      this.kernelCards.delete(id);
    }
    if (before && before.address !== card?.address && !this.clusters.some(c => c.address === before.address)) {
      this.snapshots.delete(before.address);
    }
    if (!before || !card || before.address !== card.address) {
      this.renderList();
    } else {
      this.renderCluster(card.address);
    }
    if (link.kernel === this.currentKernel()) {
      this.nbInfo = link.info ?? { attached: false, pid: 0, pending: 0, cells: [], error: 'no-jpar' };
      this.renderNotebook();
    }
  }

  /** The server's clusters, then the cards kernels push for clusters the server does not list. */
  private allClusters(): IClusterSummary[] {
    const out = [...this.clusters];
    const seen = new Set(out.map(c => c.address));
    for (const s of this.kernelCards.values()) {
      if (!seen.has(s.address)) {
        seen.add(s.address);
        out.push({
          id: s.id || '', address: s.address, pid: 0, host: '', local: false, remote: false, file: '',
          backend: s.backend, source: 'kernel', capabilities: s.capabilities, unsupported: s.unsupported,
          stop: s.stop, stop_title: s.stop_title, owned: s.owned
        });
      }
    }
    return out;
  }

  /**
   * The active notebook's pending tasks, as its kernel last pushed them; opens the comm when worth a
   * try, and only while the kernel is idle (no request ever reaches a kernel that runs a cell).
   */
  async refreshNotebook(): Promise<void> {
    if (this.nbBusy || this.isDisposed) {
      return;
    }
    this.nbBusy = true;
    try {
      const kernel = this.currentKernel();
      if (!kernel || kernel.status === 'dead') {
        this.nbInfo = kernel ? { attached: false, pid: 0, pending: 0, cells: [], error: 'The kernel is not running.' } : null;
        return;
      }
      const link = this.linkFor(kernel);
      if (!link.isOpen && this.openWanted && kernel.status === 'idle') {
        this.openWanted = false;
        await link.open();
      }
      if (link.info) {
        this.nbInfo = link.info;
      } else if (!link.isOpen && this.openWanted && kernel.status !== 'idle') {
        this.nbInfo = { attached: false, pid: 0, pending: 0, cells: [], error: 'busy' };
      } else {
        this.nbInfo = { attached: false, pid: 0, pending: 0, cells: [], error: 'no-jpar' };
      }
    } catch (err) {
      this.nbInfo = { attached: false, pid: 0, pending: 0, cells: [], error: String((err as Error).message || err) };
    } finally {
      this.nbBusy = false;
      this.renderNotebook();
    }
  }

  private cellLabel(cellId: string): { index: number; text: string } {
    const nb = this.tracker?.currentWidget?.content;
    if (nb) {
      for (let i = 0; i < nb.widgets.length; i++) {
        const cell = nb.widgets[i];
        if (cell.model.id === cellId) {
          const first = cell.model.sharedModel.getSource().split('\n')[0].trim();
          return { index: i, text: `cell ${i + 1}: ${first.length > 32 ? first.slice(0, 31) + '…' : first}` };
        }
      }
    }
    return { index: -1, text: cellId ? 'a cell no longer in this notebook' : 'outside any cell' };
  }

  private renderNotebook(): void {
    const el = this.node.querySelector('.jp-jpar-notebook') as HTMLElement;
    const panel = this.tracker?.currentWidget;
    const info = this.nbInfo;
    const link = this.currentKernel() ? this.links.get(this.currentKernel()!.id) : undefined;
    el.dataset.attached = String(!!info?.attached);
    el.dataset.pending = String(info?.pending ?? 0);
    el.dataset.push = String(!!link?.isOpen);
    const name = panel ? panel.context.path.split('/').pop() : '';
    let body: string;
    if (!panel) {
      body = '<div class="jp-jpar-dim">No notebook is active.</div>';
    } else if (!info || !info.attached) {
      body =
        '<div class="jp-jpar-dim">' +
        (info && info.error === 'busy'
          ? 'The kernel is busy: this notebook\'s jpar tasks show here once it is idle.'
          : info && info.error && info.error !== 'no-jpar'
          ? esc(info.error)
          : 'Not using jpar yet: run <code>import jpar; jpar.init()</code>, or <b>init</b> on a cluster below.') +
        '</div>';
    } else {
      // The server cancels through a native head. A Dask or Ray cluster it cannot reach: the kernel
      // cancels, asked over the comm while it is idle; while it runs a cell, Jupyter's interrupt does.
      const noCancel =
        this.kernelDriven(info) && this.currentKernel()?.status !== 'idle'
          ? ` disabled data-unsupported="true" title="${esc(
              `The kernel is busy running a cell: on ${info.backend || 'this backend'} the sidebar cancels through ` +
                "the kernel once it is idle; its interrupt button cancels the running cell's tasks now."
            )}"`
          : '';
      const cells = info.cells
        .map(c => {
          const label = this.cellLabel(c.cell_id);
          const names = Object.entries(c.names)
            .map(([n, k]) => `${esc(n)} ×${k}`)
            .join(', ');
          return (
            `<li class="jp-jpar-cell" data-cell-id="${esc(c.cell_id)}" data-pending="${c.pending}">` +
            `<a class="jp-jpar-goto" data-action="goto-cell" title="Show this cell">${esc(label.text)}</a> ` +
            `<span class="jp-jpar-dim">${c.pending} pending (${names})</span> ` +
            `<button class="jp-jpar-button jp-mod-warn" data-action="cancel-cell"${noCancel || ' title="Cancel the pending tasks this cell submitted"'}>cancel</button></li>`
          );
        })
        .join('');
      body =
        `<div class="jp-jpar-nb-status">driver ${info.driver} of <span title="${esc(info.cluster?.address)}">` +
        `cluster ${esc(info.cluster?.id)}</span> · <span class="jp-jpar-nb-pending">${info.pending}</span> pending` +
        (info.pending
          ? ` <button class="jp-jpar-button jp-mod-warn" data-action="cancel-notebook"${noCancel || ' title="Cancel every pending task of this notebook"'}>cancel all</button>`
          : '') +
        '</div>' +
        (cells ? `<ul class="jp-jpar-list jp-jpar-cells">${cells}</ul>` : '') +
        (info.layer ? '' : '<div class="jp-jpar-dim">Tasks per cell need <code>%load_ext jpar</code>.</div>');
    }
    el.innerHTML =
      `<div class="jp-jpar-section">This notebook <span class="jp-jpar-dim">${esc(name)}</span></div>` + body;
    for (const a of this.snapshots.keys()) {
      this.markCurrentDriver(a);
    }
  }

  /** Mark, in a cluster's driver list, the driver that is the active notebook's kernel. */
  private markCurrentDriver(address: string): void {
    const card = this.cardOf(address);
    if (!card) {
      return;
    }
    const info = this.nbInfo;
    for (const li of Array.from(card.querySelectorAll('.jp-jpar-driver'))) {
      const el = li as HTMLElement;
      const mine = !!info?.attached && info.cluster?.address === address && String(info.driver) === el.dataset.no;
      el.classList.toggle('jp-mod-current', mine);
    }
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
      const live = new Set(this.allClusters().map(c => c.address));
      for (const a of Array.from(this.snapshots.keys())) {
        if (!live.has(a)) {
          this.snapshots.delete(a);
        }
      }
      this.renderList();
    } else if (kind === 'cluster') {
      if (Array.from(this.kernelCards.values()).some(s => s.address === payload.address)) {
        return; // its kernel's card, pushed over the comm, is the live one
      }
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
    const clusters = this.allClusters();
    const keep = new Set(clusters.map(c => `${c.source || 'server'} ${c.address}`));
    for (const el of Array.from(list.querySelectorAll('.jp-jpar-cluster'))) {
      const card = el as HTMLElement;
      if (!keep.has(`${card.dataset.source} ${card.dataset.address}`)) {
        el.remove();
      }
    }
    for (const c of clusters) {
      if (!this.cardOf(c.address)) {
        const card = document.createElement('div');
        card.className = 'jp-jpar-cluster';
        card.dataset.address = c.address;
        card.dataset.clusterId = c.id;
        card.dataset.backend = c.backend || 'native';
        card.dataset.source = c.source || 'server';
        const backend = c.backend && c.backend !== 'native' ? c.backend : '';
        card.innerHTML =
          `<div class="jp-jpar-cluster-head"><span class="jp-jpar-cluster-name" title="${esc(c.address)}">` +
          `${esc(c.remote ? 'remote' : 'cluster')} ${esc(c.id)}` +
          (backend ? ` <span class="jp-jpar-backend" title="a ${esc(backend)} cluster, measured by the notebook's kernel that drives it">${esc(backend)}</span>` : '') +
          '</span>' +
          `<span class="jp-jpar-cluster-address">${esc(c.address)}</span></div>` +
          `<div class="jp-jpar-actions">${actionButtons(c)}</div>` +
          '<div class="jp-jpar-body"><div class="jp-jpar-empty">connecting…</div></div>';
        list.appendChild(card);
      }
      this.renderCluster(c.address);
    }
    const empty = list.querySelector(':scope > .jp-jpar-empty') as HTMLElement | null;
    if (clusters.length && empty) {
      empty.remove();
    } else if (!clusters.length && !empty) {
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
    body.innerHTML = cardBody(s, id => this.kernelPaths.get(id));
    this.markCurrentDriver(address);
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
      } else if (action === 'stop' && card?.dataset.source === 'kernel') {
        await this.stopThroughKernel(address);
      } else if (action === 'stop') {
        if (!(await this.confirmStop(address))) {
          this.message(`kept ${address} running`);
          return;
        }
        this.message(`stopping ${address}…`);
        await this.request('stop', 'POST', { address });
        this.message(`stopped ${address}`);
      } else if (action === 'add-engine') {
        const r = await this.request('engines', 'POST', { address, engines: 1 });
        this.message(r.message || `engine started (pid ${r.pids.join(', ')})`);   // e.g. "added engine 3 (+1 CPU)"
      } else if (action === 'remove-engine') {
        const r = await this.request(`engines?address=${encodeURIComponent(address)}&engines=1`, 'DELETE');
        this.message(r.message || `removing engine ${(r.removed || []).join(', ')}`);   // "removing engine 3 (-1 CPU)"
      } else if (action === 'cancel-driver') {
        const no = parseInt((button.closest('.jp-jpar-driver') as HTMLElement).dataset.no || '0', 10);
        const r = await this.request('cancel', 'POST', { address, driver: no });
        this.message(`cancelled ${r.cancelled} task(s) of driver ${no}`);
      } else if (action === 'cancel-notebook' || action === 'cancel-cell') {
        // through the server and the head: the kernel may be busy running that very cell
        const info = this.nbInfo;
        if (!info?.attached || !info.cluster) {
          throw new Error('This notebook drives no jpar cluster.');
        }
        let r: { cancelled: number };
        const kernel = this.currentKernel();
        if (this.kernelDriven(info) && kernel) {
          // a Dask or Ray cluster: the server cannot reach it, the (idle) kernel cancels
          const cellId = action === 'cancel-cell' ? (button.closest('.jp-jpar-cell') as HTMLElement).dataset.cellId : '';
          r = await this.linkFor(kernel).request({ request: 'cancel', cell_id: cellId || null });
        } else if (action === 'cancel-cell') {
          const cellId = (button.closest('.jp-jpar-cell') as HTMLElement).dataset.cellId;
          const cell = info.cells.find(c => c.cell_id === cellId);
          r = await this.request('cancel', 'POST', { address: info.cluster.address, tasks: cell?.tasks || [] });
        } else {
          r = await this.request('cancel', 'POST', { address: info.cluster.address, driver: info.driver });
        }
        this.message(`cancelled ${r.cancelled} task(s) of this notebook`);
      } else if (action === 'goto-cell') {
        const cellId = (button.closest('.jp-jpar-cell') as HTMLElement).dataset.cellId || '';
        const { index } = this.cellLabel(cellId);
        const nb = this.tracker?.currentWidget?.content;
        if (nb && index >= 0) {
          nb.activeCellIndex = index;
          void nb.scrollToCell(nb.widgets[index]);
        }
      } else if (action === 'add-remote') {
        const a = (this.node.querySelector('.jp-jpar-remote-address') as HTMLInputElement).value.trim();
        const k = (this.node.querySelector('.jp-jpar-remote-key') as HTMLInputElement).value.trim();
        await this.request('clusters', 'POST', { address: a, key: k });
        this.message(`added ${a}`);
      } else if (action === 'insert') {
        this.insert(`import jpar\n${initCall(card)}`, false);
      } else if (action === 'dashboard') {
        // the notebook that drives this cluster already: no second jpar.init (it would fail)
        this.insert(
          this.drivesCluster(address)
            ? 'import jpar\njpar.dashboard()'
            : `import jpar\n${initCall(card)}\njpar.dashboard()`,
          true
        );
      }
    } catch (err) {
      this.message(String((err as Error).message || err), true);
    } finally {
      button.disabled = false;
    }
  }

  /** Whether the notebook's cluster is one its kernel pushes a card for (Dask, Ray), not the server. */
  private kernelDriven(info: INotebookInfo | null): boolean {
    return !!info?.cluster && Array.from(this.kernelCards.values()).some(s => s.address === info.cluster!.address);
  }

  /** Whether the active notebook's kernel is a driver of the cluster at `address`. */
  private drivesCluster(address: string): boolean {
    const info = this.nbInfo;
    return !!info?.attached && info.cluster?.address === address;
  }

  /**
   * Ask before stopping a cluster someone drives: the active notebook (named as such: its next
   * jpar call fails) or other drivers. A cluster nobody drives stops at once.
   */
  private async confirmStop(address: string): Promise<boolean> {
    const mine = this.drivesCluster(address);
    const own = mine ? this.nbInfo?.driver : undefined;
    const others = (this.snapshots.get(address)?.drivers || []).filter(d => d.no !== own);
    if (!mine && !others.length) {
      return true;
    }
    const body = document.createElement('div');
    body.className = 'jp-jpar-stop-dialog';
    const name = this.tracker?.currentWidget?.context.path.split('/').pop() || 'this notebook';
    const lines: string[] = [];
    if (mine) {
      lines.push(
        `This notebook (${name}) drives this cluster: stopping it cancels the notebook's pending tasks, ` +
          "and its next jpar call needs jpar.init() again."
      );
    }
    if (others.length) {
      const who = others.map(d => {
        const path = d.kernel_id ? this.kernelPaths.get(d.kernel_id) : undefined;
        return path ? `${path} (kernel pid ${d.pid})` : `${d.kind} pid ${d.pid} on ${d.host}`;
      });
      lines.push(`${mine ? 'Also driven' : 'Driven'} by: ${who.join(', ')}.`);
    }
    for (const line of lines) {
      const p = document.createElement('p');
      p.textContent = line;
      body.appendChild(p);
    }
    const result = await showDialog({
      title: `Stop the jpar cluster at ${address}?`,
      body: new Widget({ node: body }),
      buttons: [Dialog.cancelButton({ label: 'Keep it' }), Dialog.warnButton({ label: 'Stop' })]
    });
    return result.button.accept;
  }

  /**
   * Stop on a Dask or Ray card: the server cannot reach that cluster, so the kernel that pushes the
   * card runs jpar.shutdown() (a comm request, only while it is idle), after the user agreed. That
   * stops a cluster jpar started and only disconnects the notebook from one it connected to.
   */
  private async stopThroughKernel(address: string): Promise<void> {
    const entry = Array.from(this.kernelCards.entries()).find(([, s]) => s.address === address);
    const link = entry ? this.links.get(entry[0]) : undefined;
    if (!entry || !link) {
      throw new Error('The kernel that drives this cluster is gone.');
    }
    if (link.kernel.status !== 'idle') {
      throw new Error('The kernel that drives this cluster is busy running a cell: stop it once the cell is done ' +
        '(the interrupt button cancels the cell\'s tasks now).');
    }
    const s = entry[1];
    const path = this.kernelPaths.get(entry[0]) || 'its notebook';
    const body = document.createElement('div');
    body.className = 'jp-jpar-stop-dialog';
    const p = document.createElement('p');
    p.textContent = s.owned
      ? `${path} drives this ${s.backend} cluster, which jpar started: its kernel runs jpar.shutdown(), ` +
        'which cancels its pending tasks and stops the cluster and its workers.'
      : `${path} drives this ${s.backend} cluster, which jpar did not start: its kernel runs jpar.shutdown(), ` +
        'which cancels its pending tasks and disconnects it; the cluster keeps running.';
    body.appendChild(p);
    const result = await showDialog({
      title: `${s.owned ? 'Stop' : 'Disconnect from'} the ${s.backend} cluster at ${address}?`,
      body: new Widget({ node: body }),
      buttons: [Dialog.cancelButton({ label: 'Keep it' }), Dialog.warnButton({ label: s.owned ? 'Stop' : 'Disconnect' })]
    });
    if (!result.button.accept) {
      this.message(`kept ${address} running`);
      return;
    }
    this.message(`stopping ${address}…`);
    const r = await link.request({ request: 'stop' }, 120000);
    this.message(r.owned ? `stopped ${r.stopped}` : `disconnected from ${r.stopped} (it keeps running)`);
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
    const panel = new ClusterPanel(tracker, app.serviceManager.sessions);
    shell.add(panel, 'left', { rank: 600 });
    app.commands.addCommand('jpar:open-sidebar', {
      label: 'Show the jpar clusters',
      execute: () => shell.activateById(panel.id)
    });
  }
};

export default plugin;
