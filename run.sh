#!/bin/bash
python predict.py
