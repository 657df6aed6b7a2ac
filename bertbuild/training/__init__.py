"""Fine-tuning a pretrained BERT into a SQuAD QA checkpoint."""
