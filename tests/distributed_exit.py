"""Clean teardown for the scripts the distributed tests launch: without it, gloo's worker threads are sometimes
still joinable at interpreter exit and the process aborts ("terminate called without an active exception")."""

import torch.distributed as dist


def shut_down() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
