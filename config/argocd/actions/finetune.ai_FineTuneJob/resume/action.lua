-- kubectl finetune resume FINETUNEJOB
obj.spec.suspend = false
return obj
