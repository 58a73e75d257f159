/**
 * One cluster's card in the sidebar, as HTML: its buttons and its body (engines, tasks, object store,
 * actors, drivers) from a snapshot, whichever side measured it: the Jupyter server (a native head) or
 * the kernel that drives a Dask or Ray cluster (same shape, plus its backend's capability flags).
 */

export const STATES = ['waiting', 'queued', 'assigned', 'running', 'done', 'failed', 'cancelled'];

export interface IClusterSummary {
  id: string;
  address: string;
  pid: number;
  host: string;
  local: boolean;
  remote: boolean;
  file: string;
  backend?: string; // "native" for the server's clusters
  source?: string; // "kernel": a notebook's kernel pushes this card (Dask, Ray)
  capabilities?: Record<string, boolean>; // jpar.backends.Capabilities, as flags
  unsupported?: Record<string, string>; // flag -> why the button is off (feature, what to do instead)
  stop?: string; // set: the sidebar cannot stop it, and this says how to
  stop_title?: string; // what stop does, where it is not the default (a kernel-driven card)
  owned?: boolean; // kernel-driven: jpar started the cluster, so stop ends it (else it disconnects)
}

export interface IEngine {
  id: number;
  node: string;
  pid: number;
  cpu: number | null; // null: not sampled yet (shown as "-")
  rss: number | null;
  queued: number;
  busy: boolean;
  mem_limit?: number; // the worker's memory limit (Dask): the memory bar's scale
}

export interface IStoreFigures {
  used: number;
  capacity: number;
  spilled: number;
  objects: number | null; // null: the backend counts no objects (Dask's managed bytes)
}

export interface ISnapshot {
  address: string;
  id?: string;
  error?: string;
  engines?: IEngine[];
  tasks?: Record<string, number>;
  rate?: number;
  store?: IStoreFigures;
  store_nodes?: (IStoreFigures & { node: string; host: string })[];
  actors?: { id: number; class: string; name: string; state: string }[];
  actor_counts?: Record<string, number>;
  drivers?: { no: number; pid: number; kind: string; host: string; tasks?: number; kernel_id?: string }[];
  memory_total?: number;
  uptime?: number;
  // kernel-pushed cards (Dask, Ray) also carry their IClusterSummary fields
  backend?: string;
  source?: string;
  capabilities?: Record<string, boolean>;
  unsupported?: Record<string, string>;
  stop?: string;
  stop_title?: string;
  owned?: boolean;
  kernel_id?: string;
}

export function esc(s: unknown): string {
  return String(s ?? '').replace(/[&<>"']/g, c =>
    ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] as string
  );
}

export function mib(n: number): string {
  return n >= 2 ** 30 ? `${(n / 2 ** 30).toFixed(1)} GiB` : `${(n / 2 ** 20).toFixed(0)} MiB`;
}

/** A bar with a label; `frac` NaN: nothing measured yet (empty bar, data-value ""). */
export function bar(kind: string, frac: number, label: string): string {
  const pct = isNaN(frac) ? 0 : Math.max(0, Math.min(100, frac * 100));
  return (
    `<div class="jp-jpar-bar" data-kind="${kind}" data-value="${isNaN(frac) ? '' : pct.toFixed(1)}" title="${esc(label)}">` +
    `<div class="jp-jpar-bar-fill" style="width:${pct.toFixed(1)}%"></div>` +
    `<span class="jp-jpar-bar-label">${esc(label)}</span></div>`
  );
}

/**
 * A card's buttons. Those its backend lacks (a capability flag off) stay visible but disabled, with
 * a tooltip naming the feature and what to do instead; so does stop where the sidebar cannot stop it.
 */
export function actionButtons(c: IClusterSummary): string {
  const off = (flag: string) => (c.capabilities && c.capabilities[flag] === false ? (c.unsupported || {})[flag] || flag : '');
  const button = (action: string, label: string, title: string, why: string, warn = false) =>
    `<button class="jp-jpar-button${warn ? ' jp-mod-warn' : ''}" data-action="${action}"` +
    (why ? ` disabled data-unsupported="true" title="${esc(why)}"` : ` title="${esc(title)}"`) +
    `>${label}</button>`;
  const engines = off('add_engines');
  const native = !c.source || c.source === 'server';
  return (
    button('insert', 'init', 'Insert jpar.init(...) for this cluster into the active notebook', '') +
    button('dashboard', 'dashboard', 'Open the dashboard in the active notebook', '') +
    (c.file || !native ? button('add-engine', '+1 engine', 'Start one more engine on this machine', engines) : '') +
    button('remove-engine', '−1 engine', 'Stop one engine once its running task is done', engines) +
    button('stop', 'stop', c.stop_title || 'Stop this cluster and all its processes', c.stop || '', true)
  );
}

/** The jpar.init call that connects to the cluster of a card (its backend named unless native). */
export function initCall(card: HTMLElement | null): string {
  const address = JSON.stringify(card?.dataset.address || '');
  const backend = card?.dataset.backend || 'native';
  return backend === 'native' ? `jpar.init(address=${address})` : `jpar.init(backend=${JSON.stringify(backend)}, address=${address})`;
}

/**
 * The body of a card from its snapshot; `nameOf(kernel id)` names a driver that is a kernel of this
 * Jupyter server by its notebook's path.
 */
export function cardBody(s: ISnapshot, nameOf: (kernelId: string) => string | undefined): string {
  const engines = s.engines || [];
  const memShare = (s.memory_total || 1) / Math.max(1, engines.length);
  const tasks = s.tasks || {};
  const store = s.store || { used: 0, capacity: 0, spilled: 0, objects: 0 };
  const fromKernel = s.source === 'kernel';
  const rows = engines
    .map(
      e =>
        `<div class="jp-jpar-engine" data-engine-id="${e.id}" data-busy="${e.busy}" data-measured="${e.cpu !== null}">` +
        `<span class="jp-jpar-engine-id" title="pid ${e.pid} on ${esc(e.node)}">${e.id}</span>` +
        (e.cpu === null || e.rss === null // not sampled yet: no figure rather than a false 0 % / 0 MiB
          ? bar('cpu', NaN, '- CPU') + bar('mem', NaN, '-')
          : bar('cpu', e.cpu / 100, `${e.cpu.toFixed(0)}% CPU`) + bar('mem', e.rss / (e.mem_limit || memShare), mib(e.rss))) +
        `</div>`
    )
    .join('');
  const nodes = s.store_nodes || [];
  const storeRows =
    nodes.length > 1 // one bar per node, labelled with its host
      ? nodes
          .map(n => `<div class="jp-jpar-store-node" data-node="${esc(n.node)}"><span class="jp-jpar-dim">${esc(n.host)}</span>` +
            bar('store', n.capacity ? n.used / n.capacity : 0, `${mib(n.used)} / ${mib(n.capacity)}`) + '</div>')
          .join('')
      : '';
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
    .map(d => {
      const path = d.kernel_id ? nameOf(d.kernel_id) : undefined;
      const who = path ? `${esc(path)} <span class="jp-jpar-dim">(kernel pid ${d.pid})</span>` : `${esc(d.kind)} pid ${d.pid} on ${esc(d.host)}`;
      const tasks = d.tasks ?? 0;
      return (
        `<li class="jp-jpar-driver" data-no="${d.no}" data-tasks="${tasks}" data-kernel-id="${esc(d.kernel_id || '')}">` +
        `${who} · ${tasks} task${tasks === 1 ? '' : 's'}` +
        (tasks && !fromKernel // the server cancels through a native head only
          ? ' <button class="jp-jpar-button jp-mod-warn" data-action="cancel-driver" title="Cancel all unfinished tasks of this driver">cancel</button>'
          : '') +
        '</li>'
      );
    })
    .join('');
  return (
    `<div class="jp-jpar-section">Engines <span class="jp-jpar-dim">(${engines.length})</span></div>` +
    `<div class="jp-jpar-engines">${rows || '<div class="jp-jpar-empty">no engines</div>'}</div>` +
    `<div class="jp-jpar-section">Tasks <span class="jp-jpar-rate" data-rate="${s.rate || 0}">${(s.rate || 0).toFixed(1)} tasks/s</span></div>` +
    `<div class="jp-jpar-chips">${chips}</div>` +
    `<div class="jp-jpar-section">Object store <span class="jp-jpar-dim">` +
    (store.objects === null ? "workers' managed memory" : `${store.objects} objects`) +
    `${store.spilled ? `, ${mib(store.spilled)} spilled` : ''}</span></div>` +
    bar('store', store.capacity ? store.used / store.capacity : 0, `${mib(store.used)} / ${mib(store.capacity)}`) +
    storeRows +
    `<div class="jp-jpar-section">Actors <span class="jp-jpar-dim">(${(s.actors || []).length})</span></div>` +
    `<ul class="jp-jpar-list jp-jpar-actors">${actors || '<li class="jp-jpar-dim">none</li>'}</ul>` +
    `<div class="jp-jpar-section">Drivers <span class="jp-jpar-dim">(${(s.drivers || []).length})</span></div>` +
    `<ul class="jp-jpar-list jp-jpar-drivers">${drivers || '<li class="jp-jpar-dim">none attached</li>'}</ul>`
  );
}
