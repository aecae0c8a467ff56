"""Does tuning R's token embeddings help UniTune? Textual inversion (Gal et al. 2022) binds an image to a
new token by training only its embedding; "pivotal tuning" trains the token and the generator together.
Here a full tune of the UNet at rate `unet` trains, alongside it, the text encoder's input embeddings of
R's tokens at rate `text` (every other row frozen), against the plain tune (`text` = 0: unitune's own
tune, same draws and optimizer). Embedded model, edit benchmark validation split, same seeds. A
benchmark, not a test; results in docs/binding.md ("Tuning R's token embeddings").

Usage: HF_HUB_OFFLINE=1 python bench/rare_token_tuning.py SCENES MODE [MODE ...]
       a MODE is `unet_rate/text_rate`, e.g. `1e-4/0` (plain), `1e-4/1e-3` or `0/5e-3` (tokens only)

Prints per mode and (guidance, strength): R alone scored as a no-op edit (preserved %, median PSNR to
the base), and the edits (success, expressive, preserved %).
"""

import sys

import torch
from variant_tunes import compare, train_in_place

from unitune.pipelines import Conditioning
from unitune.tuning import encode_latent, noisy_batch, trainable_parameters, training_scheduler

BATCH = 4


def rare_conditioning(pipe, rare: str, runtime) -> Conditioning:
    """R's conditioning with the graph to the text encoder's embeddings kept (the SD 1.x path)."""
    embeds, _ = pipe.encode_prompt(rare, runtime.device, 1, False)
    return Conditioning(embeds.float())


def make_tune(editor):
    pipe, runtime = editor.pipe, editor.runtime
    table = pipe.text_encoder.get_input_embeddings().weight
    original_table = table.detach().clone()
    scheduler = training_scheduler(pipe)

    def restore_table():
        with torch.no_grad():
            table.copy_(original_table)

    def tune(base, rare, mode):
        unet_rate, text_rate = (float(x) for x in mode.split("/"))
        latent = encode_latent(pipe, base, runtime)
        rows = torch.tensor(pipe.tokenizer(rare, add_special_tokens=False).input_ids)
        mask = torch.zeros(table.shape[0], 1)
        mask[rows] = 1
        groups = []
        if unet_rate:
            groups.append({"params": trainable_parameters(pipe.unet, "full"), "lr": unet_rate})
        else:
            pipe.unet.requires_grad_(False)
        hook = None
        if text_rate:
            table.requires_grad_(True)
            hook = table.register_hook(lambda grad: grad * mask)
            groups.append({"params": [table], "lr": text_rate})
        fixed = None if text_rate else rare_conditioning(pipe, rare, runtime).expand(BATCH)

        def batch(step, generator):
            text = fixed if fixed is not None else rare_conditioning(pipe, rare, runtime).expand(BATCH)
            return *noisy_batch(scheduler, latent, BATCH, generator), text

        train_in_place(editor, groups, batch)
        if hook is not None:
            hook.remove()
        table.requires_grad_(False)
        table.grad = None
        return restore_table

    return tune


if __name__ == "__main__":
    compare(make_tune, int(sys.argv[1]), sys.argv[2:])
