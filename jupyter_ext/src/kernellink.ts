/**
 * One comm to one notebook's kernel (target "jpar.sidebar", served by jpar.notebook.sidebar_comm):
 * what only that kernel knows, i.e. its pending jpar tasks per cell, and, when it drives a cluster
 * the Jupyter server cannot watch (Dask, Ray), that cluster's card (jpar.notebook.sidebar_cluster).
 *
 * The kernel *pushes* those figures whenever they change; the sidebar sends nothing while the
 * notebook runs a cell. That is the point: every request a kernel handles makes it publish
 * busy/idle status messages, and JupyterLab's KernelConnection takes the last status message it
 * sees, whichever shell it came from, as the notebook's state. A request answered on a kernel
 * subshell while a cell runs ends with "idle", and the status bar then says Idle until the cell
 * ends. So the comm is opened on the main shell (comms over subshells disabled for it), only
 * while the kernel is idle, and is then only listened to. Cancelling goes through the Jupyter
 * server with the task ids the kernel pushed (POST /jpar/cancel), never through the busy kernel. A
 * Dask or Ray cluster the server cannot reach: the sidebar asks the kernel itself (`request`), and only
 * while it is idle (then the request's busy/idle status messages say nothing false).
 */
import { Kernel, KernelMessage } from '@jupyterlab/services';

export const TARGET = 'jpar.sidebar';

export interface ICellTasks {
  cell_id: string;
  msg_id: string;
  pending: number;
  names: Record<string, number>;
  /** Task ids as decimal strings, runs of consecutive ids as "FIRST-LAST" (ids pass 2**53). */
  tasks?: string[];
}

export interface INotebookInfo {
  attached: boolean;
  backend?: string;
  layer?: boolean;
  pid: number;
  pending: number;
  cells: ICellTasks[];
  cluster?: { id: string; address: string };
  driver?: number;
  error?: string;
}

/** `promise`, or a rejection after `ms`: nothing the sidebar awaits on a kernel may hang it. */
export function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = window.setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
    promise.then(
      v => {
        window.clearTimeout(timer);
        resolve(v);
      },
      e => {
        window.clearTimeout(timer);
        reject(e);
      }
    );
  });
}

export class KernelLink {
  constructor(
    readonly kernel: Kernel.IKernelConnection,
    private onInfo: (link: KernelLink) => void = () => undefined
  ) {
    // A dead or restarting kernel loses its comms: forget this one (a new one opens when idle again).
    kernel.statusChanged.connect((_, status) => {
      if (status === 'dead' || status === 'restarting' || status === 'autorestarting') {
        this.dispose();
      }
    });
  }

  /** The kernel's last push (null before the first, or when it has no jpar). */
  info: INotebookInfo | null = null;

  /**
   * The card of the Dask or Ray cluster this kernel drives, as it last pushed it (the shape of the
   * server's cluster snapshots, plus backend, capabilities...); null when it drives none of those.
   */
  cluster: Record<string, any> | null = null;

  /** Whether the comm is open (the kernel has imported jpar, or has not answered yet). */
  get isOpen(): boolean {
    return this.comm !== null && !this.comm.isDisposed;
  }

  /**
   * Open the comm if the kernel is idle (otherwise false, and nothing is sent); resolves true at
   * the kernel's first push, false when the kernel closes the comm (no jpar in it). Safe to call
   * again: it reuses an open comm.
   */
  async open(): Promise<boolean> {
    if (this.isOpen) {
      return true;
    }
    if (this.opening) {
      return this.opening;
    }
    this.opening = withTimeout(this.doOpen(), 20000, 'opening the jpar comm')
      .catch(() => this.isOpen)
      .finally(() => {
        this.opening = null;
      });
    return this.opening;
  }

  private async doOpen(): Promise<boolean> {
    const kernel = this.kernel;
    if (kernel.isDisposed || kernel.connectionStatus !== 'connected') {
      return false;
    }
    await withTimeout(kernel.info, 10000, 'kernel info');
    // Only while idle: the open is one request (busy/idle status around it, on the main shell, in
    // order with the cells); sent while a cell runs, it would wait for the cell anyway.
    if (!kernel.handleComms || kernel.status !== 'idle') {
      return false;
    }
    const comm = kernel.createComm(TARGET);
    // No subshell for this comm: creating one is a control request, and its status messages (and
    // those of a comm_open on a subshell) would reach the status bar while a cell runs.
    (comm as unknown as { commsOverSubshells?: string }).commsOverSubshells = 'disabled';
    let first: (ok: boolean) => void = () => undefined;
    const answered = new Promise<boolean>(resolve => (first = resolve));
    comm.onClose = () => {
      first(false);
      this.info = null;
      this.cluster = null;
      if (this.comm === comm) {
        this.comm = null;
      }
      this.onInfo(this);
    };
    comm.onMsg = (msg: KernelMessage.ICommMsgMsg) => {
      const data = msg.content.data as any;
      if (data && data.push === 'info') {
        this.info = data as INotebookInfo;
        first(true);
        this.onInfo(this);
      } else if (data && data.push === 'cluster') {
        this.cluster = data.cluster ?? null;
        this.onInfo(this);
      } else if (data && data.reply !== undefined) {
        this.answers.get(data.id)?.(data);
      }
    };
    this.comm = comm;
    comm.open({});
    // An unknown target makes the kernel close the comm right after opening it; a kernel that
    // turned busy meanwhile answers after its cell (the comm stays open and its pushes will come).
    const ok = await withTimeout(answered, 5000, 'the jpar comm').catch(() => !comm.isDisposed);
    if (!ok && !comm.isDisposed) {
      comm.dispose();
    }
    return ok;
  }

  /**
   * Ask the kernel (`{"request": "cancel", "cell_id"?}`, ...) and wait for its answer; only while it is
   * idle: a request to a kernel running a cell would wait for the cell, and its status messages
   * would then arrive mid-cell.
   */
  async request(data: Record<string, unknown>, ms = 10000): Promise<any> {
    const comm = this.comm;
    if (!comm || comm.isDisposed) {
      throw new Error('This notebook\'s kernel has no jpar comm open (import jpar there first).');
    }
    if (this.kernel.status !== 'idle') {
      throw new Error('The kernel is busy running a cell: its interrupt button cancels that cell\'s tasks.');
    }
    const id = this.nextId++;
    const answer = new Promise<any>(resolve => this.answers.set(id, resolve));
    comm.send({ ...data, id } as any);
    try {
      const reply = await withTimeout(answer, ms, `the kernel's answer to ${String(data.request)}`);
      if (reply.error) {
        throw new Error(reply.error);
      }
      return reply;
    } finally {
      this.answers.delete(id);
    }
  }

  dispose(): void {
    const comm = this.comm;
    this.comm = null;
    this.info = null;
    const had = this.cluster !== null;
    this.cluster = null;
    if (had) {
      this.onInfo(this); // its card goes
    }
    if (comm && !comm.isDisposed) {
      // no comm_close to the kernel: its thread stops when the kernel or comm goes, and a close
      // sent now could be answered mid-cell; just stop listening
      comm.dispose();
    }
  }

  private comm: Kernel.IComm | null = null;
  private nextId = 1;
  private answers = new Map<number, (reply: any) => void>();
  private opening: Promise<boolean> | null = null;
}
