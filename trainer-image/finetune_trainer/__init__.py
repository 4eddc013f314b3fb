"""finetune_trainer: the code inside the trainer image.

`prepare` turns a raw dataset into validated, deduplicated, PII-checked train/validation/test
splits with a data report; `train` fine-tunes a base model on them (SFT or DPO; LoRA, QLoRA or
full) and writes the artifact, its digest and results. `config` is the one schema both read;
`exitcodes` is the contract with the operator. See README.md beside this package.
"""

__version__ = "0.1.0"
