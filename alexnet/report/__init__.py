"""What a person looks at: the training curves and confusion matrix (`plots`), the run report (`run_report`)
and the augmentation grid (`grid`). Imports `data`, `config` and `base`."""
