"""From images on disk to a trained, saved and reloaded adapter, in the fewest steps of the public API.

    python examples/train_one.py --image-folder my_images --clip openai/clip-vit-base-patch16 --output-dir runs/coop

`my_images` holds one sub-folder per class (`my_images/<class>/<image>.png`; the folder names are the class names,
underscores become spaces). `load_image_folder` keeps 70% of each class for training and carves out 10% for
validation and 20% for testing (or reads `train/`, `val/`, `test/` sub-folders when there are any). The script trains
CoOp (4 context vectors from "a photo of a") with the field's optimiser (SGD, momentum 0.9, cosine schedule, one
warm-up epoch), reports the test accuracy, saves the adapter, loads it onto a fresh copy of the CLIP and checks
that it predicts the same.

Offline smoke run (a random tiny CLIP and generated images; the accuracy means nothing):

    python examples/tiny_setup.py --output /tmp/demo
    python examples/train_one.py --image-folder /tmp/demo/images --clip /tmp/demo/clip --output-dir /tmp/demo/one
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from transformers import CLIPModel, CLIPTokenizer

from prompt_clip import CoOpConfig, PromptModel, get_prompt_model
from prompt_clip.data import ImageTransform, PromptDataset, load_image_folder
from prompt_clip.evaluation import predict
from prompt_clip.training import PromptTrainer, TrainingConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-folder", required=True, help="a folder of class sub-folders of images")
    parser.add_argument("--clip", default="openai/clip-vit-base-patch16", help="a CLIP on the Hub or on disk")
    parser.add_argument("--output-dir", required=True, help="receives adapter/ and checkpoints/")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=0.002)
    args = parser.parse_args()
    output_dir = Path(args.output_dir)

    # 1. Data: samples (path, label, class name) per split, and CLIP's pre-processing (random resized crop + flip
    #    for training, resize + centre crop for testing; size from the CLIP's config, OpenAI's statistics).
    splits = load_image_folder(args.image_folder)
    clip = CLIPModel.from_pretrained(args.clip)
    tokenizer = CLIPTokenizer.from_pretrained(args.clip)
    train_set = PromptDataset(splits.train, ImageTransform.from_clip_config(clip.config, train=True))
    test_set = PromptDataset(splits.test, ImageTransform.from_clip_config(clip.config, train=False))
    print(f"{splits.num_classes} classes, {len(train_set)} training and {len(test_set)} test images")

    # 2. The prompted model: the CLIP stays frozen, only CoOp's context vectors train.
    model = get_prompt_model(clip, CoOpConfig(n_ctx=4, ctx_init="a photo of a"), tokenizer, splits.classnames)
    model.print_trainable_parameters()
    zero_shot = predict(model, test_set, zero_shot=True).accuracy()

    # 3. Training: checkpoints after every epoch, so `trainer.train(resume_from_checkpoint=True)` continues an
    #    interrupted run exactly. `accelerate launch` runs the same code on several GPUs or processes.
    training = TrainingConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr)
    trainer = PromptTrainer(model, train_set, training, output_dir=output_dir / "checkpoints")
    result = trainer.train()
    model = trainer.model
    predictions = predict(model, test_set)
    print(f"trained {result.epochs} epochs in {result.train_time_s:.1f} s ({result.images_per_second:.1f} images/s)")
    print(f"test accuracy: zero-shot {zero_shot:.2f}%, CoOp {predictions.accuracy():.2f}%")

    # 4. Save the adapter (a few KB), load it onto a fresh CLIP and check that it predicts the same.
    model.save_pretrained(output_dir / "adapter")
    fresh_clip = CLIPModel.from_pretrained(args.clip)
    reloaded = PromptModel.from_pretrained(fresh_clip, output_dir / "adapter", tokenizer=tokenizer)
    again = predict(reloaded, test_set)
    print(f"adapter saved to {output_dir / 'adapter'}; reloaded test accuracy {again.accuracy():.2f}%")
    if not torch.equal(again.predicted, predictions.predicted):
        raise SystemExit("the reloaded adapter predicts differently")


if __name__ == "__main__":
    main()
