"""Caption templates for pretraining: many phrasings, so the small CLIP learns class names, not one sentence.

Generic templates are used for every source; a few more describe each source's domain. Some are long on purpose:
prompt learners put 4-16 learned tokens before the class name, so text positions up to ~30 must be trained too.
"""

from __future__ import annotations

GENERIC_TEMPLATES = (
    "{}",
    "{}.",
    "a {}.",
    "the {}.",
    "a photo of a {}.",
    "a photo of the {}.",
    "a picture of a {}.",
    "a picture of the {}.",
    "an image of a {}.",
    "an image showing a {}.",
    "a black and white photo of a {}.",
    "a black and white picture of the {}.",
    "a grayscale image of a {}.",
    "a low resolution image of a {}.",
    "a low resolution photo of the {}.",
    "a blurry photo of a {}.",
    "a pixelated photo of a {}.",
    "a small image of a {}.",
    "a tiny picture of the {}.",
    "a close-up photo of a {}.",
    "a centered photo of a {}.",
    "a cropped photo of the {}.",
    "a dark photo of a {}.",
    "a bright photo of the {}.",
    "a good photo of a {}.",
    "a clean image of the {}.",
    "a scan of a {}.",
    "a thumbnail of a {}.",
    "this is a {}.",
    "this is a picture of a {}.",
    "there is a {} in this image.",
    "itap of a {}.",
    "an example of a {}.",
    "one {}.",
    "a single {} on a dark background.",
    "a photo of a {}, taken from the front.",
    "a low resolution black and white photo of a {}, centered on a plain black background.",
    "a very small and blurry grayscale picture that shows one {} in the middle of the frame.",
    "an old, grainy, low quality black and white scan of a single {}, seen from the front on a dark background.",
)

FASHION_TEMPLATES = (
    "a photo of a {}, a type of clothing.",
    "a {}, a piece of clothing.",
    "a product photo of a {}.",
    "a {} for sale.",
    "a {} in an online shop.",
    "a catalogue image of a {}.",
    "a fashion photo of a {}.",
    "a photo of a {}, a type of fashion item.",
    "a black and white product photo of a {}, a type of clothing sold in an online fashion store.",
)

DIGIT_TEMPLATES = (
    "a handwritten {}.",
    "the digit {}.",
    "the number {}.",
    "a drawing of the number {}.",
    "a handwritten digit: {}.",
    "the number {} written by hand.",
    "a scan of a handwritten {}.",
    "a photo of the digit {}.",
    "a pixelated image of the handwritten number {}, written with a pen on paper and scanned at low resolution.",
)

#: Templates of each pretraining source, by `SourceData.name`; unknown names get the generic ones only.
SOURCE_TEMPLATES = {"fashion": FASHION_TEMPLATES, "digits": DIGIT_TEMPLATES}


def templates_for(source_name: str) -> tuple[str, ...]:
    """The generic templates followed by the domain templates of `source_name`."""
    return GENERIC_TEMPLATES + SOURCE_TEMPLATES.get(source_name, ())
