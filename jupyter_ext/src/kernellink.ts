/**
 * One comm to one notebook's kernel (target "jpar.sidebar", served by jpar.notebook.sidebar_comm):
 * what only that kernel knows, i.e. its pending jpar tasks per cell, and cancelling them.
 *
 * The comm runs on a kernel subshell when the kernel supports them (ipykernel >= 7), so a request
 * is answered in milliseconds while a cell is busy; on other kernels it waits for the cell. The
 * subshell has to exist before the comm opens: `await comm.subshellStarted`, then `comm.open()`.
 */
import { Kernel, KernelMessage } from '@jupyterlab/services';

export const TARGET = 'jpar.sidebar';

export interface ICellTasks {
  cell_id: string;
  msg_id: string;
  pending: number;
  names: Record<string, number>;
}

export interface INotebookInfo {
  attached: boolean;
  layer?: boolean;
  pid: number;
  pending: number;
  cells: ICellTasks[];
  cluster?: { id: string; address: string };
  driver?: number;
  error?: string;
}

type Waiter = { resolve: (data: any) => void; reject: (err: Error) => void; timer: number };

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
  constructor(readonly kernel: Kernel.IKernelConnection) {
    // A dead or restarting kernel loses its comms: fail what waits now instead of timing out later.
    kernel.statusChanged.connect((_, status) => {
      if (status === 'dead' || status === 'restarting' || status === 'autorestarting') {
        this.dispose();
      }
    });
  }

  /** Whether the comm is open (the kernel has imported jpar). */
  get isOpen(): boolean {
    return this.comm !== null && !this.comm.isDisposed;
  }

  /** Whether requests bypass a busy main shell. */
  get onSubshell(): boolean {
    return this.subshell;
  }

  /**
   * Open the comm; false when this kernel has no jpar (the kernel closes a comm to an unknown
   * target at once) or is not ready. Safe to call again: it reuses an open comm.
   */
  async open(): Promise<boolean> {
    if (this.isOpen) {
      return true;
    }
    if (this.opening) {
      return this.opening;
    }
    this.opening = withTimeout(this.doOpen(), 20000, 'opening the jpar comm')
      .catch(() => false)
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
    if (!kernel.handleComms || kernel.status === 'dead') {
      return false;
    }
    const comm = kernel.createComm(TARGET);
    this.subshell = kernel.supportsSubshells;
    // CommHandler (the class behind IComm) has it since JupyterLab 4.4; the interface does not.
    const started = (comm as unknown as { subshellStarted?: Promise<void> }).subshellStarted;
    if (this.subshell && started) {
      await withTimeout(started, 10000, 'starting a subshell');
    }
    let closed = false;
    comm.onClose = () => {
      closed = true;
      this.failAll('the kernel closed the jpar comm (no jpar in it, or it restarted)');
      if (this.comm === comm) {
        this.comm = null;
      }
    };
    comm.onMsg = (msg: KernelMessage.ICommMsgMsg) => {
      const data = msg.content.data as any;
      const w = this.waiters.get(data?.id);
      if (w) {
        this.waiters.delete(data.id);
        window.clearTimeout(w.timer);
        w.resolve(data);
      }
    };
    this.comm = comm;
    comm.open({});
    // An unknown target makes the kernel close the comm right after opening it: ask once to know
    // (a kernel without subshells may be busy: a timeout then does not mean "no jpar").
    try {
      await this.request({ request: 'info' }, this.subshell ? 5000 : 60000);
    } catch {
      // closed (no jpar) or timed out (busy): told apart by `closed`
    }
    if (closed) {
      if (!comm.isDisposed) {
        comm.dispose();
      }
      this.comm = null;
      return false;
    }
    return true;
  }

  /** Send a request and wait for the reply with the same id. */
  request(data: Record<string, unknown>, timeoutMs = 5000): Promise<any> {
    const comm = this.comm;
    if (!comm || comm.isDisposed) {
      return Promise.reject(new Error('no jpar comm to this kernel'));
    }
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = window.setTimeout(() => {
        this.waiters.delete(id);
        reject(new Error(`the kernel did not answer ${String(data.request)} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiters.set(id, { resolve, reject, timer });
      comm.send({ ...data, id });
    });
  }

  info(): Promise<INotebookInfo> {
    return this.request({ request: 'info' });
  }

  cancel(cellId?: string): Promise<{ cancelled: number; error?: string }> {
    return this.request({ request: 'cancel', cell_id: cellId || null });
  }

  dispose(): void {
    this.failAll('closed');
    if (this.comm && !this.comm.isDisposed) {
      try {
        this.comm.close();
      } catch {
        // the kernel is gone already
      }
    }
    this.comm = null;
  }

  private failAll(why: string): void {
    for (const w of this.waiters.values()) {
      window.clearTimeout(w.timer);
      w.reject(new Error(why));
    }
    this.waiters.clear();
  }

  private comm: Kernel.IComm | null = null;
  private opening: Promise<boolean> | null = null;
  private subshell = false;
  private nextId = 1;
  private waiters = new Map<number, Waiter>();
}
