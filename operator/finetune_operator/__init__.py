"""finetune-operator: fine-tunes, evaluates, versions and progressively rolls out LLMs on Kubernetes."""

__version__ = "0.1.0"
