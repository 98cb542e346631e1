"""Write a data set in flarebench's ``tensors`` format: one ``.npz`` with x_train, y_train, x_test, y_test and
client_ids (the owner of each training sample: the natural clients).

    python examples/make_npz_dataset.py mnist_clients.npz --clients 20 --alpha 0.3
    python -m flarebench run --dataset tensors -p dataset.path=mnist_clients.npz --partition natural --clients 20

The samples here are the MNIST images shipped with flarebench (normalised float32 ``[N, 1, 28, 28]``,
int64 labels), and the owners come from a Dirichlet label split (``--alpha``: small = each client holds few
classes). Your own data goes in the same way: any float32 ``x`` ``[N, ...]``, integer labels ``y`` ``[N]``,
and, if your data has owners, one id per training sample in ``client_ids`` (integers or strings).
"""

from __future__ import annotations

import argparse

import numpy as np

from flarebench.data import load_dataset, partition


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="the .npz file to write")
    ap.add_argument("--clients", type=int, default=20, help="number of owners (natural clients)")
    ap.add_argument("--alpha", type=float, default=0.5, help="Dirichlet concentration of each class over the clients")
    ap.add_argument("--train", type=int, default=8000, help="training samples to keep (of 8,000)")
    ap.add_argument("--test", type=int, default=2000, help="test samples to keep (of 2,000)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    data = load_dataset("mnist-embedded", root="")
    x, y = data.x_train[: args.train], data.y_train[: args.train]
    owners = partition(y, "dirichlet", args.clients, args.seed, params={"alpha": args.alpha})  # index tensors per client
    client_ids = np.full(len(y), -1, dtype=np.int64)
    for client, idx in enumerate(owners):
        client_ids[idx.numpy()] = client
    keep = client_ids >= 0  # the split deals out clients * (N // clients) samples: drop the few left over
    np.savez_compressed(
        args.out,
        x_train=x.numpy()[keep], y_train=y.numpy()[keep], client_ids=client_ids[keep],
        x_test=data.x_test[: args.test].numpy(), y_test=data.y_test[: args.test].numpy(),
    )
    print(f"wrote {args.out}: {int(keep.sum())} training samples over {args.clients} clients, {min(args.test, len(data.y_test))} test samples")


if __name__ == "__main__":
    main()
